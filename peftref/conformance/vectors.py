"""The shipped vectors: ``vectors/vectors.safetensors`` (every array) and ``vectors/manifest.json`` (everything else).

Manifest: ``suite_version``, ``spec_versions`` (per method), ``data`` (the safetensors file name) and its ``sha256``, and
``cases``, each with ``id``, ``kind``, ``method``, ``config``, ``shape`` [d_out, d_in], ``batch``, ``ops``, ``tensors``
(name -> shape), and where they apply ``num_trainable``, ``tolerance`` (class, reduction length K, condition κ, bound per dtype), ``scales`` (the magnitude each
expected output's error is divided by, see :mod:`.tolerance`),
``flags`` (``peft_locations``: FourierFT indices equal PEFT's for the seed) and ``reason`` (invalid cases).
The array of tensor ``name`` of a case is the safetensors key ``<case id>/<name>``; names are ``input/W``, ``input/x``,
``input/gy``, ``input/bias``, ``param/<p>``, ``expected/<output>`` (``delta_weight``, ``forward``, ``forward_bias``, ``merge``,
``gx``, ``grad/<p>``, ``indices``).

Generation is deterministic: safetensors orders keys itself, the JSON is written with sorted keys, and every array comes
from a generator seeded by its case id, so ``peftref conform generate`` rewrites the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from .. import refimpl
from .cases import Case, all_cases

#: Bump when cases are added or changed in a way a runner must know about.
SUITE_VERSION = 1
#: The version of each method's math (SPEC.md); bump a method's when its formulas change.
SPEC_VERSIONS = {method: 1 for method in refimpl.METHODS}
VECTORS_DIR = Path(__file__).resolve().parent / "vectors"
MANIFEST_FILE = "manifest.json"
DATA_FILE = "vectors.safetensors"
GROUPS = (("input", "inputs"), ("param", "params"), ("expected", "expected"))


@dataclass
class Vectors:
    """Loaded vectors: the manifest header and the cases with their arrays."""

    suite_version: int
    spec_versions: dict
    sha256: str
    cases: list[Case]
    directory: Path


def serialise(cases: list[Case]) -> tuple[bytes, str]:
    """(safetensors bytes, manifest JSON text) for `cases`."""
    tensors, entries = {}, []
    for case in cases:
        shapes = {}
        for prefix, attribute in GROUPS:
            for name, array in getattr(case, attribute).items():
                key = f"{prefix}/{name}"
                tensors[f"{case.id}/{key}"] = np.ascontiguousarray(array)
                shapes[key] = list(array.shape)
        entry = {"id": case.id, "kind": case.kind, "method": case.method, "config": case.config, "shape": list(case.shape),
                 "batch": list(case.batch), "ops": list(case.ops), "tensors": shapes}
        optional = {"num_trainable": case.num_trainable, "tolerance": case.tolerance, "scales": case.scales, "flags": case.flags,
                    "reason": case.reason}
        entries.append(entry | {key: value for key, value in optional.items() if value})
    data = save_safetensors(tensors)
    manifest = {
        "suite_version": SUITE_VERSION,
        "spec_versions": SPEC_VERSIONS,
        "data": DATA_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "cases": entries,
    }
    return data, json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write_atomically(path: Path, payload: bytes) -> None:
    """Write `payload` to a temporary file beside `path`, then rename it: `path` is never half-written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the permissions of a plainly created file, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def generate(out_dir: str | Path = VECTORS_DIR) -> tuple[Path, Path]:
    """Build every case from the reference and write (manifest, data) into `out_dir` (created if needed)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    data, manifest = serialise(all_cases())
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / DATA_FILE, data)
    write_atomically(out / MANIFEST_FILE, manifest.encode())
    return out / MANIFEST_FILE, out / DATA_FILE


def load(directory: str | Path = VECTORS_DIR) -> Vectors:
    """Read and verify the vectors in `directory` (sha256 of the data, suite version)."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no conformance manifest at {manifest_path}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{manifest_path}: not valid JSON ({err})") from None
    if manifest.get("suite_version") != SUITE_VERSION:
        raise ValueError(f"{manifest_path}: suite_version {manifest.get('suite_version')!r}, this runner reads {SUITE_VERSION}")
    data_path = directory / manifest["data"]
    if not data_path.is_file():
        raise FileNotFoundError(f"{manifest_path} names data file {manifest['data']!r}, which does not exist in {directory}")
    data = data_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["sha256"]:
        raise ValueError(f"{data_path}: sha256 {digest} does not match the manifest's {manifest['sha256']}; regenerate the vectors")
    arrays = load_safetensors(data)
    cases = []
    for entry in manifest["cases"]:
        groups = {attribute: {} for _, attribute in GROUPS}
        for key in entry.get("tensors", {}):
            prefix, name = key.split("/", 1)
            groups[dict(GROUPS)[prefix]][name] = arrays[f"{entry['id']}/{key}"]
        cases.append(
            Case(id=entry["id"], kind=entry["kind"], method=entry["method"], config=entry["config"], shape=tuple(entry["shape"]),
                 ops=tuple(entry["ops"]), batch=tuple(entry["batch"]), num_trainable=entry.get("num_trainable"),
                 tolerance=entry.get("tolerance"), scales=entry.get("scales", {}), flags=entry.get("flags", {}),
                 reason=entry.get("reason", ""), **groups)
        )
    return Vectors(manifest["suite_version"], manifest["spec_versions"], digest, cases, directory)
