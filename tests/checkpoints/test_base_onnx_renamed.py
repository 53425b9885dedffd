"""An ONNX base whose weights the exporter renamed and transposed (dynamo's constant-folded ``MatMul`` on ``val_i``).

Regression: base_shapes used to see only initializers named ``<module>.weight``, so reading a FourierFT or Bat checkpoint
(whose shapes must come from the base) against such a graph failed with "module not found in base".
"""

import numpy as np
import onnx
import pytest

from peftref.checkpoints import base_shapes, read_adapter, write_adapter
from peftref.demo import default_model, demo_adapter
from peftref.export.models import mlp_model


@pytest.fixture(scope="module")
def renamed_base(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "renamed.onnx"
    model = mlp_model(default_model(0), form="matmul", sequence=True)
    assert not any(t.name.endswith(".weight") for t in model.graph.initializer)  # the case under test: only val_i
    onnx.save(model, path)
    return path


def test_base_shapes_finds_renamed_transposed_weights(renamed_base):
    assert base_shapes(renamed_base) == {f"layers.{i}": (64, 64) for i in range(4)}


@pytest.mark.parametrize("method", ["fourierft", "bat", "bone"])
def test_peft_checkpoint_reads_against_a_renamed_graph(method, renamed_base, tmp_path):
    adapter = demo_adapter(method, default_model(0), seed=0)
    write_adapter(adapter, tmp_path / method)
    read = read_adapter(tmp_path / method, base=renamed_base)
    assert read.peft_type is not None  # PEFT's own format, whose shapes come from the base
    for name, layer in adapter.layers.items():
        W = np.zeros(layer.shape) if method != "bat" else default_model(0)[int(name.split(".")[1])][0]
        np.testing.assert_array_equal(read.layers[name].delta_weight(W), layer.delta_weight(W))
