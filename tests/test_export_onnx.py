"""ONNX graphs: checker, metadata, dynamic batch and parity with the torch model."""
from __future__ import annotations

import onnx
import pytest
import torch
from helpers import tiny_model

from export.onnx_graphs import onnx_graph, parity, reference_outputs, session
from models.config import CircuitSpec, LayerSpec
from models.flow import KirchhoffNet


@pytest.mark.parametrize("device", ["affine-tanh", "diff-relu", "affine-leaky_relu", "conductance"])
@pytest.mark.parametrize("direction", ["sample", "logprob"])
def test_onnx_matches_torch(device, direction):
    model = tiny_model(layers=2, steps=8, device=device, dtype=torch.float32)
    graph = onnx_graph(model, direction)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    assert parity(model, direction, graph, x) < 1e-4


def test_graph_metadata_batch_axis_and_checker():
    model = tiny_model(layers=3, steps=5, dtype=torch.float32)
    graph = onnx_graph(model, "sample", "abc")
    proto = onnx.load_from_string(graph)
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["knet.steps_per_layer"] == "5,5,5" and meta["knet.method"] == "rk4"
    assert meta["knet.content_sha256"] == "abc"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    sess = session(graph)
    for batch in (1, 7):
        z = torch.randn(batch, 2, generator=torch.Generator().manual_seed(batch))
        x, logq = sess.run(None, {"z": z.numpy()})
        want_x, want_logq = reference_outputs(model, "sample", z)
        assert x.shape == (batch, 2) and logq.shape == (batch,)
        assert float((torch.from_numpy(logq) - want_logq).abs().max()) < 1e-4
    assert onnx_graph(model, "sample", "abc") == graph  # deterministic bytes


def test_node_count_changes_are_exported_for_sampling_only():
    layers = (LayerSpec(duration=0.5, nodes=3, edges=((1, 2), (2, 3), (3, 0), (0, 1))),
              LayerSpec(duration=0.5, nodes=2, edges=((1, 2), (2, 0))))
    spec = CircuitSpec(name="shrink", device="affine-tanh", data_dim=2, layers=layers, pad_mode="repeat")
    model = KirchhoffNet(spec)
    model.requires_grad_(False)
    graph = onnx_graph(model, "sample")
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    assert parity(model, "sample", graph, z) < 1e-4
    with pytest.raises(ValueError, match="log-density is not defined"):
        onnx_graph(model, "logprob")
