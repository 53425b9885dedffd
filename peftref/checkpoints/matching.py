r"""Which module is which: names across prefixes, and PEFT's per-module patterns.

**Module names across prefixes.** The same layer is ``encoder.layer.0.attention.self.query`` in a ``BertModel``,
``bert.encoder.layer.0.attention.self.query`` in a ``BertForSequenceClassification`` and in an ONNX graph exported from it,
and ``base_model.model.…`` inside PEFT. :func:`resolve_module` matches a name to one of a set of candidates:

1. a candidate equal to the name wins;
2. otherwise the candidates that are a *dot-boundary suffix* of the name, or of which the name is one
   (``a.b.c`` and ``b.c`` match; ``a.bc`` and ``c`` do not), are the matches;
3. exactly one match is the answer; none, or several (the error lists them), is an error.

**PEFT's patterns.** ``rank_pattern`` / ``alpha_pattern`` (LoRA) and ``n_frequency_pattern`` (FourierFT) map regular
expressions to per-module values. PEFT 0.21.2 resolves them differently, and both are replicated exactly:

- LoRA (``peft.utils.other.get_pattern_key``): the first key, in the dict's order, with
  ``re.match(rf"(.*\.)?({key})$", module)``; if none matches, the key equal to the module name, else the default.
- FourierFT (``FourierFTModel._create_and_replace``): the first key with ``re.match(rf".*\.{key}$", module)`` — note the
  dot it requires before the key; if none matches, the key equal to the module name, else the default.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from ._files import CheckpointError


def _is_dot_suffix(short: str, long: str) -> bool:
    return long.endswith("." + short)


def resolve_module(name: str, candidates: Iterable[str], *, where: str = "the candidates") -> str:
    """The candidate naming the same module as `name`: equal, else the one unambiguous dot-boundary suffix match."""
    candidates = set(candidates)
    if name in candidates:
        return name
    matches = sorted(c for c in candidates if _is_dot_suffix(c, name) or _is_dot_suffix(name, c))
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CheckpointError(f"module {name!r} is ambiguous in {where}: it matches {matches}; give the full module name")
    last = name.rsplit(".", 1)[-1]
    similar = sorted(c for c in candidates if c.rsplit(".", 1)[-1] == last)[:5]
    hint = f"; modules ending in {last!r} there: {similar}" if similar else ""
    raise CheckpointError(f"module {name!r} not found in {where}{hint}")


def _first_match(patterns: Mapping, template: str, module: str, field: str):
    for key in patterns:
        try:
            if re.match(template.format(key=key), module):
                return key
        except re.error as err:
            raise CheckpointError(f"{field}: key {key!r} is not a valid regular expression ({err})") from None
    return module


def lora_pattern_value(patterns: Mapping, module: str, default, field: str = "pattern"):
    """PEFT LoRA's value for `module` from ``rank_pattern`` / ``alpha_pattern`` (``get_pattern_key`` semantics)."""
    return patterns.get(_first_match(patterns, r"(.*\.)?({key})$", module, field), default)


def fourierft_pattern_value(patterns: Mapping, module: str, default, field: str = "n_frequency_pattern"):
    """PEFT FourierFT's value for `module` from ``n_frequency_pattern``."""
    return patterns.get(_first_match(patterns, r".*\.{key}$", module, field), default)
