"""File-level plumbing shared by every checkpoint format: JSON and safetensors in, atomic directories out.

Every failure becomes a :class:`CheckpointError` whose message starts with the file it concerns, so that a corrupt,
truncated or missing file reads as one clear line, never as a traceback from deep inside safetensors or json.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAME = "adapter_model.bin"
#: Floating-point dtypes accepted for parameters (bfloat16 is ml_dtypes', which safetensors.numpy returns).
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or written; the message names the file, module and key, and what was expected."""


def read_json(path: Path) -> dict:
    """The JSON object in `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read: {err}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file, with their stored dtypes; a missing, truncated or corrupt file is one clear error."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return safetensors.numpy.load_file(path)
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file, it may be truncated or corrupt ({err})") from None


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in a safetensors file, reading only its header."""
    try:
        with safetensors.safe_open(path, framework="np") as file:
            return {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file, it may be truncated or corrupt ({err})") from None


def read_tensor(path: Path, key: str) -> np.ndarray:
    """One tensor of a safetensors file, reading only that tensor."""
    try:
        with safetensors.safe_open(path, framework="np") as file:
            return file.get_tensor(key)
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: cannot read tensor {key!r}, the file may be truncated or corrupt ({err})") from None


def check_float(path, where: str, array: np.ndarray) -> None:
    """A floating-point (fp16/bf16/fp32/fp64), finite array."""
    if array.dtype.name not in FLOAT_DTYPES:
        raise CheckpointError(f"{path}: {where}: expected a floating-point dtype ({', '.join(FLOAT_DTYPES)}), got {array.dtype.name}")
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(np.asarray(array, dtype=np.float64)))[0]
        raise CheckpointError(f"{path}: {where}: contains non-finite values (NaN or Inf), first at index {tuple(int(i) for i in bad)}")


def add_tensors(tensors: dict[str, np.ndarray], new: dict[str, np.ndarray]) -> None:
    """tensors.update(new), refusing a key that is already there (two modules whose keys collide)."""
    clash = sorted(set(tensors) & set(new))
    if clash:
        raise CheckpointError(f"tensor keys collide: {clash}")
    tensors.update(new)


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse to write over a file, or over a non-empty directory unless `overwrite`."""
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise CheckpointError(f"{path}: directory exists and is not empty; pass overwrite=True to replace it")


def write_directory(path: Path, config: dict, tensors: dict[str, np.ndarray], metadata: dict[str, str], overwrite: bool) -> None:
    """Write adapter_config.json and adapter_model.safetensors into `path` atomically.

    Both files are written into a temporary sibling directory which is then renamed into place, so `path` is either
    untouched or complete — never half-written. An existing directory is replaced only if empty or if `overwrite`.
    """
    path = Path(path)
    check_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, staging / WEIGHTS_NAME, metadata=metadata)
        if path.is_dir():
            previous = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, previous)  # previous was an empty directory: rename(2) replaces it
            try:
                os.replace(staging, path)
            except OSError:
                os.replace(previous, path)
                raise
            shutil.rmtree(previous)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path: Path):
    """Yield a temporary path beside `path`; on success it is renamed to `path`, on error removed."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
