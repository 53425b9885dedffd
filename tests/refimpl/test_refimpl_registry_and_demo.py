"""refimpl.get / METHODS / make_config, every module's API shape, and ``peftref demo`` end to end."""

from __future__ import annotations

import dataclasses
import json

import pytest
from refimpl_strategies import PAPER_COUNT

from peftref import cli, demo, refimpl

API = ("Config", "init", "delta_weight", "merge", "unmerge", "forward", "vjp", "num_trainable", "param_shapes", "TRAINABLE", "FROZEN")


def test_methods_are_the_seven_of_the_spec_in_order():
    assert refimpl.METHODS == ("lora", "fourierft", "sdctft", "dcft", "bone", "bat", "svd_rescale")


@pytest.mark.parametrize("method", refimpl.METHODS)
def test_every_module_has_the_common_api(method):
    m = refimpl.get(method)
    assert m.METHOD == method and m.__name__ == f"peftref.refimpl.{method}"
    assert all(hasattr(m, name) for name in API)
    assert dataclasses.is_dataclass(m.Config) and m.Config.__dataclass_params__.frozen
    assert not set(m.TRAINABLE) & set(m.FROZEN)


def test_get_rejects_an_unknown_method():
    with pytest.raises(ValueError, match=r"unknown method 'dora'; expected one of lora, fourierft, sdctft, dcft, bone, bat, svd_rescale"):
        refimpl.get("dora")


def test_make_config_builds_the_methods_config():
    cfg = refimpl.make_config("dcft", {"d": 4, "k": 2})
    assert cfg == refimpl.get("dcft").Config(d=4, stride=4, k=2, scaling=1.0)
    assert refimpl.make_config("bone", {}) == refimpl.get("bone").Config()


@pytest.mark.parametrize(
    "method, fields, error, message",
    [
        ("nope", {}, ValueError, r"unknown method 'nope'"),
        (
            "lora",
            {"r": 4, "lora_alpha": 8},
            ValueError,
            r"lora: unknown config field\(s\) \['lora_alpha'\]; expected a subset of \['alpha', 'r', 'use_rslora'\]",
        ),
        (
            "fourierft",
            {"n_frequency": 10, "scaling": 1.0},
            ValueError,
            r"fourierft: unknown config field\(s\) \['n_frequency', 'scaling'\]",
        ),
        ("bat", {"r": "4"}, TypeError, r"bat: config field 'r' must be an int, got str '4'"),
        ("lora", "r=4", TypeError, r"lora: config fields must be a mapping name -> value, got str"),
    ],
)
def test_make_config_rejects_bad_fields(method, fields, error, message):
    with pytest.raises(error, match=message):
        refimpl.make_config(method, fields)


def test_demo_json_reports_verified_folds_and_the_papers_counts(capsys):
    assert cli.main(["demo", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["method"] for row in rows] == list(refimpl.METHODS)
    lora_total = demo.DEPTH * PAPER_COUNT["lora"](refimpl.make_config("lora", demo.DEMO_CONFIGS["lora"]), demo.WIDTH, demo.WIDTH)
    for row in rows:
        cfg = refimpl.make_config(row["method"], demo.DEMO_CONFIGS[row["method"]])
        expected = demo.DEPTH * PAPER_COUNT[row["method"]](cfg, demo.WIDTH, demo.WIDTH)
        assert row["trainable"] == expected, row
        assert row["ratio_to_lora"] == pytest.approx(expected / lora_total, rel=1e-15)
        # onnxruntime computes the merged model in float32 (ε = 1.2e-7): through 4 layers of 64-term dot products the
        # rounding is ~√64·4·ε·|h| ≈ 4e-6·|h|, |h| ≲ a few units; 2e-5·max(1, effect) bounds it with margin.
        assert row["max_abs_error"] < 2e-5 * max(1.0, row["adapter_effect"]), row
        assert row["adapter_effect"] > 1000 * row["max_abs_error"], row  # the check could see a wrong merge
        assert row["fold_seconds"] > 0 and row["latency_ratio"] > 0


def test_demo_table_lists_every_method(capsys):
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{method} " in out for method in refimpl.METHODS)
