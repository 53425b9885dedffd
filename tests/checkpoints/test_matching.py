"""The module-name matching rule, and PEFT's pattern semantics replayed against PEFT's own get_pattern_key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peftref.checkpoints import CheckpointError, resolve_module
from peftref.checkpoints.matching import fourierft_pattern_value, lora_pattern_value

BASE = ["encoder.layer.0.attention.self.query", "encoder.layer.1.attention.self.query", "pooler.dense", "classifier"]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("encoder.layer.0.attention.self.query", "encoder.layer.0.attention.self.query"),  # equal
        ("bert.encoder.layer.1.attention.self.query", "encoder.layer.1.attention.self.query"),  # a wrapper's prefix
        ("layer.1.attention.self.query", "encoder.layer.1.attention.self.query"),  # a shorter, unambiguous suffix
        ("base_model.model.bert.pooler.dense", "pooler.dense"),
        ("classifier", "classifier"),
    ],
)
def test_resolves_equal_names_and_dot_boundary_suffixes(name, expected):
    assert resolve_module(name, BASE) == expected


def test_an_equal_name_wins_over_suffix_matches():
    assert resolve_module("a.b", ["a.b", "x.a.b", "b"]) == "a.b"


def test_ambiguous_suffix_lists_the_candidates():
    both = r"\['encoder.layer.0.attention.self.query', 'encoder.layer.1.attention.self.query'\]"
    with pytest.raises(CheckpointError, match=r"module 'attention.self.query' is ambiguous in the base: it matches " + both):
        resolve_module("attention.self.query", BASE, where="the base")


def test_suffixes_match_only_at_dot_boundaries():
    with pytest.raises(CheckpointError, match=r"module 'dense' not found in the candidates"):
        resolve_module("dense", ["pooler.xdense"])
    with pytest.raises(CheckpointError, match=r"module 'bert.head' not found in m; modules ending in 'head' there: \['x.a.head'\]$"):
        resolve_module("bert.head", ["x.a.head", "b.headx"], where="m")


COMPONENTS = st.sampled_from(["encoder", "layer", "0", "1", "self", "query", "value", "q_proj", "mlp"])
MODULES = st.lists(COMPONENTS, min_size=1, max_size=5).map(".".join)
PATTERN_KEYS = st.one_of(
    MODULES,  # a plain name or suffix, as PEFT's docs show
    st.builds(lambda a, b: f"{a}.*{b}", MODULES, MODULES),  # a regex
    MODULES.map(lambda m: "^" + m),  # anchored: matches the full name only
)


@given(patterns=st.dictionaries(PATTERN_KEYS, st.integers(1, 64), max_size=4), module=MODULES)
def test_lora_patterns_resolve_exactly_as_peft_get_pattern_key(patterns, module):
    from peft.utils.other import get_pattern_key

    assert lora_pattern_value(patterns, module, 8) == patterns.get(get_pattern_key(patterns.keys(), module), 8)


def test_fourierft_patterns_need_a_dot_before_the_key_or_the_exact_name():
    """PEFT's FourierFT matches re.match(rf".*\\.{key}$", module), then falls back to the key equal to the module."""
    assert fourierft_pattern_value({"fc1": 5}, "fc1", 1) == 5  # no dot before it: only the exact-name fallback finds it
    assert fourierft_pattern_value({"fc1": 5}, "model.fc1", 1) == 5
    assert fourierft_pattern_value({"c1": 5}, "model.fc1", 1) == 1  # "c1" is not a dot-separated suffix
    assert fourierft_pattern_value({"layer.0.q": 5, "q": 7}, "encoder.layer.0.q", 1) == 5  # first match in key order
    assert lora_pattern_value({"c1": 5}, "model.fc1", 1) == 1
    assert fourierft_pattern_value({"a.*": 3, "a.b": 4}, "a.b", 1) == 4  # "a.*" needs a dot before it: the fallback wins
    assert lora_pattern_value({"a.*": 3, "a.b": 4}, "a.b", 1) == 3  # LoRA's optional prefix lets "a.*" match first


def test_an_invalid_regex_is_named():
    with pytest.raises(CheckpointError, match=r"rank_pattern: key 'q\(' is not a valid regular expression"):
        lora_pattern_value({"q(": 2}, "a.q", 8, field="rank_pattern")
