"""Hugging Face PEFT's adapter format (PEFT 0.21.2) for LoRA, FourierFT, MiSS (Bone, Bat) and legacy BONE.

An adapter directory holds ``adapter_config.json`` (the PEFT config as JSON) and ``adapter_model.safetensors`` with one
tensor per adapted module and parameter, keyed ``base_model.model.<module>.<suffix>``:

| ``peft_type`` | suffix (shape) | peftref method, parameter |
| --- | --- | --- |
| ``LORA`` | ``lora_A.weight`` (r, d_in), ``lora_B.weight`` (d_out, r) | lora A, B |
| ``FOURIERFT`` | ``fourierft_spectrum`` (n,); locations are replayed from ``random_loc_seed`` | fourierft spectrum |
| ``MISS``, ``init_weights`` true/false | ``miss_block`` (r, d_out) | bone D |
| ``MISS``, ``init_weights: "mini"`` | ``miss_block`` (r, mini_r) | bone D, mini_r |
| ``MISS``, ``init_weights: "bat"`` | ``miss_block`` (d_out/r, r, r) | bat B |
| ``BONE`` (PEFT ≤ 0.17), true/false or ``"bat"`` | ``bone_block``, as ``miss_block`` | bone D / bat B |

``modules_to_save`` modules are saved whole, as ``base_model.model.<module>.<tensor>`` (PEFT matches a module to an
entry by ``module.endswith(entry)``). Config fields that change the update in a way peftref does not implement (DoRA,
trained biases, QALoRA, …) are refused with the reason; fields that do not change ΔW (dropout, most init options,
targeting) are ignored; an unknown field is accepted only when empty (null, false, {}, []).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..adapter import Adapter, LayerAdapter
from ..refimpl import fourierft
from ._files import CheckpointError, add_tensors, check_float
from ._layers import build_layer, make_config, resolve_shape
from .base import BaseShapes
from .matching import fourierft_pattern_value, lora_pattern_value

PREFIX = "base_model.model."
#: PeftConfig fields every type has, and the targeting fields: they never change ΔW once the keys are known.
COMMON_FIELDS = (
    "task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision", "inference_mode",
    "target_modules", "exclude_modules", "layers_to_transform", "layers_pattern", "modules_to_save",
)  # fmt: skip
_BIAS = {"bias": ("none", "trains the base model's biases, which a peftref adapter does not carry")}


def _is_empty(value) -> bool:
    """null, false, {}, [] or "": what an unset optional field holds."""
    return value is None or value is False or value in ({}, [], "")


@dataclass(frozen=True)
class PeftFormat:
    """What the reader knows of one ``peft_type``: the fields it reads, ignores and refuses, and the key suffixes."""

    suffixes: tuple[str, ...]
    read: tuple[str, ...]
    ignored: tuple[str, ...] = ()
    refused: dict = field(default_factory=dict)  # field -> (default, reason it changes the update)


FORMATS = {
    "LORA": PeftFormat(
        suffixes=("lora_A.weight", "lora_B.weight"),
        read=("r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern", "fan_in_fan_out", "init_lora_weights"),
        ignored=(
            "lora_dropout", "megatron_config", "megatron_core", "loftq_config", "eva_config", "corda_config",
            "lora_ga_config", "qalora_group_size", "runtime_config", "ensure_weight_tying",
        ),  # fmt: skip
        refused={
            "use_dora": (False, "DoRA is a different method; not supported"),
            **_BIAS,
            "lora_bias": (False, "adds a trained bias to lora_B, which changes the layer's bias"),
            "use_qalora": (False, "QALoRA pools the input before lora_A: a different update"),
            "layer_replication": (None, "replicates layers: the adapted model has a different structure"),
            "alora_invocation_tokens": (None, "Activated LoRA applies the update to some tokens only; it cannot be merged"),
            "velora_config": (None, "VeLoRA stores extra state peftref does not read"),
            "monteclora_config": (None, "MonteCLoRA samples the update: a different method"),
            "use_bdlora": (None, "BD-LoRA uses block-diagonal factors: a different update"),
            "arrow_config": (None, "Arrow routes between adapters per token; it cannot be merged"),
            "kasa_config": (None, "KaSA changes the base weight and inserts a diagonal: a different update"),
            "target_parameters": (None, "LoRA on bare parameters (MoE experts) is not supported"),
            "trainable_token_indices": (None, "trainable tokens change embedding rows, which a peftref adapter does not carry"),
        },
    ),
    "FOURIERFT": PeftFormat(
        suffixes=("fourierft_spectrum",),
        read=("n_frequency", "n_frequency_pattern", "scaling", "random_loc_seed", "fan_in_fan_out", "init_weights"),
        refused=_BIAS,
    ),
    "MISS": PeftFormat(suffixes=("miss_block",), read=("r", "mini_r", "init_weights"), ignored=("miss_dropout",), refused=_BIAS),
    "BONE": PeftFormat(suffixes=("bone_block",), read=("r", "init_weights"), refused=_BIAS),
}
PEFT_TYPES = tuple(FORMATS)
#: init_lora_weights values that only initialise A and B; the others change the base weights, so ΔW alone is not the update.
LORA_PLAIN_INITS = (True, False, "gaussian", "orthogonal", "eva", "mica")


def check_config_fields(path: Path, config: dict) -> PeftFormat:
    """The format of config['peft_type'], after refusing fields that change the update and unknown non-empty fields."""
    fmt = FORMATS[config["peft_type"]]
    for name, value in config.items():
        if name in fmt.refused:
            default, reason = fmt.refused[name]
            if value != default and not _is_empty(value):
                raise CheckpointError(f"{path}: field {name!r} = {value!r}: {reason}")
        elif name not in COMMON_FIELDS + fmt.read + fmt.ignored and not _is_empty(value):
            raise CheckpointError(
                f"{path}: unknown {config['peft_type']} field {name!r} = {value!r} (not in PEFT 0.21.2's config); "
                "peftref refuses it because it may change the update"
            )
    init = config.get("init_lora_weights", True)
    if fmt is FORMATS["LORA"] and init not in LORA_PLAIN_INITS:
        raise CheckpointError(
            f"{path}: field 'init_lora_weights' = {init!r}: this initialisation changes the base weights, so the saved "
            "A, B are relative to a modified base; convert the adapter to plain LoRA first with PEFT's "
            "save_pretrained(..., path_initial_model_for_weight_conversion=...)"
        )
    return fmt


def split_keys(cpath: Path, path: Path, tensors: dict, fmt: PeftFormat, modules_to_save) -> tuple[dict, dict]:
    """({module: {suffix: (key, array)}}, {module: {tensor: array}}) from PEFT's keys; unknown keys are an error."""
    entries = modules_to_save or []
    if not (isinstance(entries, list) and all(isinstance(e, str) and e for e in entries)):
        raise CheckpointError(f"{cpath}: field 'modules_to_save': expected a list of module names, got {modules_to_save!r}")
    layers: dict[str, dict] = {}
    saved: dict[str, dict] = {}
    for key, array in tensors.items():
        name = key[len(PREFIX) :] if key.startswith(PREFIX) else key
        suffix = next((s for s in fmt.suffixes if name.endswith("." + s)), None)
        if suffix is not None:
            layers.setdefault(name[: -len(suffix) - 1], {})[suffix] = (key, array)
            continue
        parts = name.split(".")
        owner = next((i for i in range(1, len(parts)) if any(".".join(parts[:i]).endswith(e) for e in entries)), None)
        if owner is None:
            raise CheckpointError(
                f"{path}: unexpected key {key!r}: not a parameter of this adapter (keys end in "
                f"{', '.join(fmt.suffixes)}) and not under modules_to_save {entries}"
            )
        check_float(path, f"key {key!r}", array)
        saved.setdefault(".".join(parts[:owner]), {})[".".join(parts[owner:])] = array
    if not layers:
        raise CheckpointError(f"{path}: no adapter parameters found (expected keys ending in {', '.join(fmt.suffixes)})")
    for module, found in layers.items():
        missing = [f"{PREFIX}{module}.{s}" for s in fmt.suffixes if s not in found]
        if missing:
            raise CheckpointError(f"{path}: module {module!r}: missing keys {missing}")
    return layers, saved


def _ndim(path: Path, module: str, key: str, array: np.ndarray, layout: str) -> np.ndarray:
    """`array` if it has as many dimensions as `layout` names, e.g. "(r, d_in)"."""
    ndim = len(layout.split(","))
    if array.ndim != ndim:
        raise CheckpointError(f"{path}: module {module!r}, key {key!r}: expected a {ndim}-D array {layout}, got shape {array.shape}")
    return array


def _dict_field(path: Path, config: dict, name: str) -> dict:
    value = config.get(name) or {}
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: field {name!r}: expected an object (regex -> value), got {value!r}")
    return value


def _pattern_value(path: Path, lookup, patterns: dict, module: str, default, name: str):
    try:
        return lookup(patterns, module, default, field=name)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None


def _lora(cpath, wpath, config, module, found, shapes, base) -> LayerAdapter:
    (key_a, A), (key_b, B) = found["lora_A.weight"], found["lora_B.weight"]
    _ndim(wpath, module, key_a, A, "(r, d_in)")
    _ndim(wpath, module, key_b, B, "(d_out, r)")
    r = _pattern_value(cpath, lora_pattern_value, _dict_field(cpath, config, "rank_pattern"), module, config.get("r", 8), "rank_pattern")
    alpha = _pattern_value(
        cpath, lora_pattern_value, _dict_field(cpath, config, "alpha_pattern"), module, config.get("lora_alpha", 8), "alpha_pattern"
    )
    cfg = make_config(cpath, module, "lora", {"r": r, "alpha": alpha, "use_rslora": config.get("use_rslora", False)})
    if A.shape[0] != cfg.r:
        raise CheckpointError(
            f"{wpath}: module {module!r}, key {key_a!r}: rank {A.shape[0]} disagrees with r = {cfg.r} from {cpath} (r, rank_pattern)"
        )
    fan_in_fan_out = bool(config.get("fan_in_fan_out", False))
    shape = resolve_shape(wpath, module, (B.shape[0], A.shape[1]), shapes, base, fan_in_fan_out)
    return build_layer(wpath, module, "lora", cfg, shape, {"A": A, "B": B}, {"A": key_a, "B": key_b}, fan_in_fan_out)


def _fourierft(cpath, wpath, config, module, found, shapes, base) -> LayerAdapter:
    key, spectrum = found["fourierft_spectrum"]
    _ndim(wpath, module, key, spectrum, "(n)")
    n = _pattern_value(
        cpath, fourierft_pattern_value, _dict_field(cpath, config, "n_frequency_pattern"), module,
        config.get("n_frequency", 1000), "n_frequency_pattern",
    )  # fmt: skip
    fields = {"n": n, "alpha": config.get("scaling", 150.0), "seed": config.get("random_loc_seed", 777)}
    cfg = make_config(cpath, module, "fourierft", {**fields, "init": "zeros" if config.get("init_weights") else "normal"})
    if spectrum.shape != (cfg.n,):
        raise CheckpointError(
            f"{wpath}: module {module!r}, key {key!r}: spectrum length {spectrum.shape[0]} disagrees with "
            f"n_frequency = {cfg.n} from {cpath} (n_frequency, n_frequency_pattern)"
        )
    fan_in_fan_out = bool(config.get("fan_in_fan_out", False))
    shape = resolve_shape(wpath, module, (None, None), shapes, base, fan_in_fan_out)
    try:
        indices = fourierft.peft_locations(cfg.seed, *shape, cfg.n)  # (2, n)
    except ValueError as err:
        raise CheckpointError(f"{wpath}: module {module!r}: cannot replay PEFT's locations: {err}") from None
    arrays, keys = {"spectrum": spectrum, "indices": indices}, {"spectrum": key, "indices": f"(replayed from seed {cfg.seed})"}
    return build_layer(wpath, module, "fourierft", cfg, shape, arrays, keys, fan_in_fan_out)


def _block(cpath, wpath, config, module, found, shapes, base) -> LayerAdapter:
    """MiSS / BONE: bone (default, mini) or bat, told apart by init_weights."""
    suffix = "miss_block" if config["peft_type"] == "MISS" else "bone_block"
    key, block = found[suffix]
    init, r = config.get("init_weights", True), config.get("r", 64)
    variants = (True, False, "bat", "mini") if config["peft_type"] == "MISS" else (True, False, "bat")
    if init not in variants:
        raise CheckpointError(f"{cpath}: field 'init_weights' = {init!r}: expected one of {list(variants)}")
    if init == "bat":
        cfg = make_config(cpath, module, "bat", {"r": r})
        d_out = _ndim(wpath, module, key, block, "(d_out/r, r, r)").shape[0] * cfg.r
        shape = resolve_shape(wpath, module, (d_out, None), shapes, base, False)
        return build_layer(wpath, module, "bat", cfg, shape, {"B": block}, {"B": key})
    mini_r = config.get("mini_r", 1) if init == "mini" else None
    cfg = make_config(cpath, module, "bone", {"r": r, "mini_r": mini_r})
    _ndim(wpath, module, key, block, "(r, d_out)" if mini_r is None else "(r, mini_r)")
    shape = resolve_shape(wpath, module, (block.shape[1] if mini_r is None else None, None), shapes, base, False)
    return build_layer(wpath, module, "bone", cfg, shape, {"D": block}, {"D": key})


_LAYER_READERS = {"LORA": _lora, "FOURIERFT": _fourierft, "MISS": _block, "BONE": _block}


def read(directory: Path, cpath: Path, wpath: Path, config: dict, tensors: dict, shapes: BaseShapes | None, base) -> Adapter:
    """An Adapter from a PEFT adapter directory (config already parsed, tensors loaded)."""
    fmt = check_config_fields(cpath, config)
    layers, saved = split_keys(cpath, wpath, tensors, fmt, config.get("modules_to_save"))
    reader = _LAYER_READERS[config["peft_type"]]
    adapted = {module: reader(cpath, wpath, config, module, found, shapes, base) for module, found in sorted(layers.items())}
    return Adapter(adapted, saved, peft_type=config["peft_type"], source=str(directory))


# ---- writing -------------------------------------------------------------------------------------------------------


def _shared(layers: list[LayerAdapter], what: str, get) -> object:
    """The value `get(layer)` all layers share; PEFT's config has one field for it."""
    values = {}
    for layer in layers:
        values.setdefault(get(layer), layer.module)
    if len(values) > 1:
        (a, module_a), (b, module_b) = list(values.items())[:2]
        raise CheckpointError(
            f"PEFT's format has one {what} for all modules, but {module_a!r} has {a!r} and {module_b!r} has {b!r}; "
            "write with format='peftref'"
        )
    return next(iter(values))


def _default_and_pattern(layers: list[LayerAdapter], get, lookup) -> tuple[object, dict]:
    """The most common value as the default, and a pattern {module: value} for the others, checked with PEFT's matcher."""
    default = Counter(get(layer) for layer in layers).most_common(1)[0][0]
    pattern = {layer.module: get(layer) for layer in layers if get(layer) != default}
    for layer in layers:
        if lookup(pattern, layer.module, default) != get(layer):
            raise CheckpointError(
                f"module {layer.module!r}: PEFT's pattern matching would give it {lookup(pattern, layer.module, default)!r} "
                f"instead of {get(layer)!r} (another module's name is a suffix of it); write with format='peftref'"
            )
    return default, pattern


def _lora_config(layers: list[LayerAdapter]) -> tuple[dict, dict]:
    r, rank_pattern = _default_and_pattern(layers, lambda l: l.config.r, lora_pattern_value)
    alpha, alpha_pattern = _default_and_pattern(layers, lambda l: l.config.alpha, lora_pattern_value)
    config = {
        "r": r, "lora_alpha": alpha, "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern,
        "use_rslora": _shared(layers, "use_rslora", lambda l: l.config.use_rslora),
        "lora_dropout": 0.0, "init_lora_weights": True, "use_dora": False,
    }  # fmt: skip
    tensors = {}
    for layer in layers:
        tensors[f"{PREFIX}{layer.module}.lora_A.weight"] = layer.params["A"]
        tensors[f"{PREFIX}{layer.module}.lora_B.weight"] = layer.params["B"]
    return config, tensors


def _fourierft_config(layers: list[LayerAdapter]) -> tuple[dict, dict]:
    n, pattern = _default_and_pattern(layers, lambda l: l.config.n, fourierft_pattern_value)
    config = {
        "n_frequency": n, "n_frequency_pattern": pattern,
        "scaling": _shared(layers, "scaling (alpha)", lambda l: l.config.alpha),
        "random_loc_seed": _shared(layers, "random_loc_seed", lambda l: l.config.seed),
        "init_weights": _shared(layers, "init", lambda l: l.config.init) == "zeros",
    }  # fmt: skip
    for layer in layers:
        replayed = fourierft.peft_locations(layer.config.seed, *layer.shape, layer.config.n)
        if not np.array_equal(np.asarray(layer.params["indices"]), replayed):
            raise CheckpointError(
                f"module {layer.module!r}: its indices are not PEFT's locations for seed {layer.config.seed}, and PEFT's "
                "format stores only the spectrum; write with format='peftref'"
            )
    return config, {f"{PREFIX}{layer.module}.fourierft_spectrum": layer.params["spectrum"] for layer in layers}


def _miss_config(layers: list[LayerAdapter]) -> tuple[dict, dict]:
    method = layers[0].method
    r = _shared(layers, "r", lambda l: l.config.r)
    if method == "bat":
        config = {"r": r, "init_weights": "bat", "mini_r": 1}
    else:
        mini_r = _shared(layers, "mini_r", lambda l: l.config.mini_r)
        config = {"r": r, "init_weights": True if mini_r is None else "mini", "mini_r": mini_r or 1}
    name = "B" if method == "bat" else "D"
    return {**config, "miss_dropout": 0.0}, {f"{PREFIX}{layer.module}.miss_block": layer.params[name] for layer in layers}


#: method -> (peft_type, config and tensors maker)
_CONFIG_WRITERS = {
    "lora": ("LORA", _lora_config),
    "fourierft": ("FOURIERFT", _fourierft_config),
    "bone": ("MISS", _miss_config),
    "bat": ("MISS", _miss_config),
}
WRITABLE_METHODS = tuple(_CONFIG_WRITERS)


def to_files(adapter: Adapter, base_model_name_or_path: str | None) -> tuple[dict, dict]:
    """(adapter_config.json object, safetensors tensors) in PEFT's format; the adapter is already validated."""
    layers = [adapter.layers[m] for m in sorted(adapter.layers)]
    peft_type, make = _CONFIG_WRITERS[layers[0].method]
    fan_in_fan_out = _shared(layers, "fan_in_fan_out", lambda l: l.fan_in_fan_out)
    if fan_in_fan_out and peft_type == "MISS":
        raise CheckpointError("PEFT's MiSS supports nn.Linear layers only, but the adapter has fan_in_fan_out (Conv1D) layers")
    config, tensors = make(layers)
    for module, saved in sorted(adapter.modules_to_save.items()):
        add_tensors(tensors, {f"{PREFIX}{module}.{name}": array for name, array in saved.items()})
    if peft_type != "MISS":
        config["fan_in_fan_out"] = fan_in_fan_out
    config.update(
        peft_type=peft_type,
        base_model_name_or_path=base_model_name_or_path,
        target_modules=[layer.module for layer in layers],
        modules_to_save=sorted(adapter.modules_to_save) or None,
        bias="none",
        task_type=None,
        inference_mode=True,
    )
    return config, tensors
