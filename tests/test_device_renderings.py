"""One device table, every rendering: each activation and each device family gives the same
numbers through every form the project renders it into.

Activation level (act(z) and act'(z) on one grid of z, against formulas written out here
independently of the table): the torch kernels of the generic model, the symbolic trees,
the engine's fused forms (direct and logistic, torch and NumPy), ONNX nodes run by
onnxruntime, and the SPICE text simulated by ngspice on a one-device deck.

Family level (a two-layer circuit solved with RK4, both directions): the generic torch
model (dense and gather operators), the engine's dense and gather layers, the NumPy path
and the ONNX graphs.
"""
from __future__ import annotations

import copy
import subprocess

import numpy as np
import pytest
import torch

from export.netlist import _act, _act_slope
from export.onnx_graphs import _GraphBuilder, onnx_expr, onnx_graph, session
from export.spice import parse_raw
from models import engine
from models.config import ACTIVATIONS, DEVICE_FAMILIES, CircuitSpec, LayerSpec, SolverConfig
from models.device_expr import evaluate
from models.devices import ACTIVATION_TABLE, LEAKY
from models.flow import KirchhoffNet, standard_normal_log_prob

Z_GRID = np.arange(-12, 13) * 0.25  # exact in binary, includes z = 0 (the kinks' convention)
LEAKY_SLOPE = 0.125  # not the default, so a renderer that ignores the parameter fails


def expected(act: str, z: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """act(z), act'(z) from the textbook formulas (act'(0) := 0 for the kinks' right side)."""
    if act == "tanh":
        return np.tanh(z), 1.0 / np.cosh(z) ** 2
    if act == "relu":
        return np.where(z > 0, z, 0.0), (z > 0).astype(float)
    if act == "leaky_relu":
        return np.where(z > 0, z, s * z), np.where(z > 0, 1.0, s)
    assert act == "identity"
    return z.copy(), np.ones_like(z)


def _torch(act, z, s):
    law = ACTIVATION_TABLE[act]
    zt = torch.from_numpy(z)
    y, slope = law.torch_with_slope(zt, s)
    torch.testing.assert_close(law.torch_fn(zt, s), y, rtol=0, atol=0)
    return y.numpy(), slope.numpy()


def _symbolic(act, z, s):
    law = ACTIVATION_TABLE[act]
    return evaluate(law.current, z, {LEAKY: s}), evaluate(law.slope, z, {LEAKY: s}) + 0 * z


def _fused(which: str, backend: str):
    def render(act, z, s):
        law = ACTIVATION_TABLE[act]
        form = law.direct(s) if which == "direct" else law.logistic(s)
        y = (form.gain * z).copy()
        g = np.zeros_like(z)
        if backend == "torch":
            kernel, feature = form.torch_ops()
            yt, gt = torch.from_numpy(y), torch.from_numpy(g)
            kernel(yt)
            if feature is not None:
                feature(yt, gt)
        else:
            kernel, feature = form.numpy_ops()
            kernel(y, y)
            if feature is not None:
                feature(y, g)
        return form.scale * y + form.offset, form.slope_const + form.slope_feature * g
    return render


def _onnx(act, z, s):
    from onnx import TensorProto, helper
    law = ACTIVATION_TABLE[act]
    g = _GraphBuilder()
    memo: dict = {}
    outs = [onnx_expr(g, law.current, "z", {LEAKY: s}, memo), onnx_expr(g, law.slope, "z", {LEAKY: s}, memo)]
    for name, src in zip(("act", "slope"), outs):
        g.nodes.append(helper.make_node("Identity", [src], [name]))
    graph = helper.make_graph(g.nodes, "act", [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("act", "slope")],
                              g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    y, slope = session(proto.SerializeToString()).run(None, {"z": z.astype(np.float32)})
    return y.astype(float), slope.astype(float) + 0 * z


def _spice(act, z, s, tmp_path):
    """The netlist's own expression text on a one-device deck, swept over z by ngspice."""
    assert np.allclose(np.diff(z), 0.25) and z[0] == -3.0
    slope = _act_slope(act, "V(z)", s) or "1"
    deck = "\n".join(["* one device", "Vz z 0 DC 0", f"B_ACT act 0 V={_act(act, 'V(z)', s)}",
                      f"B_SLOPE slope 0 V={slope}", ".dc Vz -3 3 0.25", ".end", ""])
    (tmp_path / "d.cir").write_text(deck)
    done = subprocess.run(["ngspice", "-b", "-r", "out.raw", "d.cir"], cwd=tmp_path, capture_output=True,
                          timeout=60, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    names, values = parse_raw((tmp_path / "out.raw").read_bytes())
    col = {n: values[:, i] for i, n in enumerate(names)}
    np.testing.assert_array_equal(col["v(z)"], z)
    return col["v(act)"], col["v(slope)"]


RENDERINGS = {
    "torch": (_torch, 1e-12),
    "symbolic": (_symbolic, 1e-12),
    "direct-torch": (_fused("direct", "torch"), 1e-12),
    "direct-numpy": (_fused("direct", "numpy"), 1e-12),
    "logistic-torch": (_fused("logistic", "torch"), 1e-12),
    "logistic-numpy": (_fused("logistic", "numpy"), 1e-12),
    "onnx": (_onnx, 1e-6),  # float32 graphs
    "spice": (_spice, 1e-12),
}


# the logistic form exists for tanh only (the engine's σ trick); every other pair is tested
CASES = [(act, r) for act in ACTIVATIONS for r in RENDERINGS
         if not (r.startswith("logistic") and ACTIVATION_TABLE[act].logistic_form is None)]


@pytest.mark.parametrize(("act", "rendering"), CASES)
def test_activation_renderings_agree(act, rendering, tmp_path):
    fn, atol = RENDERINGS[rendering]
    got = fn(act, Z_GRID, LEAKY_SLOPE, tmp_path) if rendering == "spice" else fn(act, Z_GRID, LEAKY_SLOPE)
    want = expected(act, Z_GRID, LEAKY_SLOPE)
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=atol, err_msg=f"{rendering}: act(z) of {act}")
    np.testing.assert_allclose(got[1], want[1], rtol=0, atol=atol, err_msg=f"{rendering}: act'(z) of {act}")


def test_the_table_covers_every_configured_activation():
    assert set(ACTIVATION_TABLE) == set(ACTIVATIONS)
    assert ACTIVATION_TABLE["tanh"].logistic(0.2) is not None  # the engine's σ trick comes from the table


# -- family level -----------------------------------------------------------------------

STEPS = (3, 2)


def circuit(device: str) -> KirchhoffNet:
    """Two layers of 3 nodes with ground edges and unequal capacitances."""
    edges = ((1, 2), (2, 3), (3, 1), (0, 1), (2, 0), (3, 2), (0, 3))
    layer = LayerSpec(duration=0.5, nodes=3, edges=edges, capacitance=(1.0, 0.5, 2.0))
    spec = CircuitSpec(name="parity", device=device, data_dim=3, layers=(layer, layer), leaky_slope=LEAKY_SLOPE,
                       solver=SolverConfig(method="rk4", steps_per_layer=STEPS))
    model = KirchhoffNet(spec, init_scale=1.0, seed=7).to(torch.float64)
    return model.requires_grad_(False)


def generic(model: KirchhoffNet, v, reverse: bool, form: str):
    model.engine_enabled, model.form = False, form
    try:
        v_end, ell, _ = model.integrate(v, reverse=reverse)
    finally:
        model.engine_enabled, model.form = True, "auto"
    return v_end, ell


@pytest.mark.parametrize("device", DEVICE_FAMILIES)
def test_family_renderings_agree(device):
    model = circuit(device)
    cfg = model.spec.solver
    v = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    for reverse in (False, True):
        want = generic(model, v, reverse, "dense")
        assert float(want[1].abs().max()) > 1e-3  # the divergence channel is exercised
        got = {"generic-gather": generic(model, v, reverse, "gather")}
        for path, kw in {"torch-dense": dict(form="dense", small=False),
                         "torch-gather": dict(form="gather", small=False),
                         "numpy-dense": dict(small=True)}.items():
            v_end, ell, stats = engine.integrate(model, v, cfg, reverse, **kw)
            assert stats.path == path and stats.ok
            got[path] = (v_end, ell)
        for name, (v_end, ell) in got.items():
            torch.testing.assert_close(v_end, want[0], rtol=0, atol=1e-10, msg=f"{name}, reverse={reverse}")
            torch.testing.assert_close(ell, want[1], rtol=0, atol=1e-10, msg=f"{name}, reverse={reverse}")
        # ONNX (float32): sampling gives x and log q(x); the log-density graph z and log p(x)
        direction = "logprob" if reverse else "sample"
        sess = session(onnx_graph(copy.deepcopy(model).to(torch.float32), direction, steps=list(STEPS)))
        state, logd = sess.run(None, {sess.get_inputs()[0].name: v.to(torch.float32).numpy()})
        base = want[0] if reverse else v
        np.testing.assert_allclose(state, want[0].numpy(), rtol=1e-5, atol=1e-4)  # float32
        np.testing.assert_allclose(logd, (standard_normal_log_prob(base) - want[1]).numpy(), rtol=1e-5, atol=1e-4)
