"""Session fixtures: base models and PEFT-written adapters, built once (see checkpoint_models)."""

from __future__ import annotations

from pathlib import Path

import pytest
from checkpoint_models import PeftCase, minilm_folder, peft_configs, randomize_adapter, tiny_model


@pytest.fixture(scope="session")
def base_dirs(tmp_path_factory) -> dict[str, Path]:
    """arch -> directory with the base model's model.safetensors (as save_pretrained writes it)."""
    root = tmp_path_factory.mktemp("bases")
    dirs = {}
    for arch in ("bert", "gpt2", "llama"):
        tiny_model(arch).save_pretrained(root / arch)
        dirs[arch] = root / arch
    dirs["minilm"] = minilm_folder()
    return dirs


@pytest.fixture(scope="session")
def peft_cases(tmp_path_factory, base_dirs) -> dict[str, PeftCase]:
    """Every case of :func:`peft_configs`, saved by PEFT."""
    from peft import get_peft_model

    root = tmp_path_factory.mktemp("peft")
    cases = {}
    for name, (arch, config) in peft_configs().items():
        peft_model = get_peft_model(tiny_model(arch), config)
        randomize_adapter(peft_model)
        peft_model.save_pretrained(root / name)
        cases[name] = PeftCase(name, arch, root / name, peft_model.eval(), base_dirs[arch])
    return cases
