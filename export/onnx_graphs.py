"""ONNX graphs of the flow: sampling (z → x, log q) and log-density (x → z, log p).

Fixed-step RK4 unrolled over every layer (adaptive solvers cannot be frozen into a graph);
the step counts are recorded in the graph's metadata (``knet.steps_per_layer``). Each layer
uses the dense form f(v) = act(v·A + c)·B (DESIGN.md §1), with 1/C and the direction folded
into B. The graph is written node by node with ``onnx.helper`` rather than traced: tracing
~6000 unrolled nodes took ~10 s per graph, building them takes milliseconds, the bytes are
identical on every build, and the same graph would need ``index_add`` (which the TorchScript
exporter refuses) in the gather form. Node-count changes between layers are a MatMul with a
0/1 selection matrix (truncate, zero-pad or repeat). The batch axis is dynamic.

Inputs/outputs (float32): sampling graph ``z (batch, d)`` → ``x (batch, d)``, ``logq
(batch,)``; log-density graph ``x (batch, d)`` → ``z (batch, d)``, ``logp (batch,)``. Models
whose node count changes between layers get a sampling graph without ``logq`` and no
log-density graph.
"""
from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from models.config import SolverConfig
from models.device_expr import Expr
from models.devices import LEAKY
from models.errors import UserInputError
from models.flow import KirchhoffNet, resize_nodes

OPSET = 17
DEFAULT_STEPS = 16


def graph_steps(model: KirchhoffNet) -> list[int]:
    """RK4 steps per layer for the graphs: the serving solver's when it is RK4, else 16."""
    cfg = model.spec.solver
    n = len(model.spec.layers)
    if cfg.method == "rk4":
        return [cfg.steps_for(k, n) for k in range(n)]
    return [DEFAULT_STEPS] * n


class _GraphBuilder:
    """Appends ONNX nodes with deterministic names (``n0``, ``n1``, …) and shared constants."""

    def __init__(self):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.inits: list = []
        self._consts: dict[tuple, str] = {}
        self._count = 0

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        out = f"t{self._count}"
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], name=f"n{self._count}", **attrs))
        self._count += 1
        return out

    def tensor(self, name: str, value: Tensor, dtype=torch.float32) -> str:
        arr = value.detach().to("cpu", dtype).contiguous().numpy()
        self.inits.append(self.numpy_helper.from_array(arr, name))
        return name

    def scalar(self, x: float) -> str:
        key = ("f", float(x))
        if key not in self._consts:
            self._consts[key] = self.tensor(f"const{len(self._consts)}", torch.tensor(float(x)))
        return self._consts[key]

    def axes(self, *axes: int) -> str:
        key = ("axes", axes)
        if key not in self._consts:
            self._consts[key] = self.tensor(f"axes{len(self._consts)}", torch.tensor(axes), torch.int64)
        return self._consts[key]


_ONNX_OPS = {"tanh": "Tanh", "max": "Max", "mul": "Mul", "sub": "Sub"}


def onnx_expr(g: _GraphBuilder, expr: Expr, z: str, values: dict[str, float], memo: dict) -> str:
    """A device-table expression (``models.device_expr``) as ONNX nodes on the tensor ``z``;
    returns the output name. ``memo`` shares repeated sub-trees (tanh(z) in 1 − tanh²)."""
    if expr in memo:
        return memo[expr]
    if expr.op == "z":
        out = z
    elif expr.op == "lit":
        out = g.scalar(float(expr.value))
    elif expr.op == "param":
        out = g.scalar(float(values[expr.value]))
    else:
        args = [onnx_expr(g, a, z, values, memo) for a in expr.args]
        if expr.op == "if_positive":
            out = g.op("Where", g.op("Greater", args[0], g.scalar(0.0)), args[1], args[2])
        else:
            out = g.op(_ONNX_OPS[expr.op], *args)
    memo[expr] = out
    return out


def _selection(n_old: int, n_new: int, pad_mode: str) -> Tensor:
    """``(n_old, n_new)`` 0/1 matrix P with v_new = v_old·P, the model's ``resize_nodes``."""
    eye = torch.eye(n_old, dtype=torch.float64)
    return resize_nodes(eye, n_new, pad_mode)


def _build(model: KirchhoffNet, direction: str, steps: list[int]):
    """Nodes and initializers of the unrolled graph: ``(builder, input name, output names)``."""
    spec = model.spec
    with_div = spec.bijective
    if direction == "logprob" and not with_div:
        raise UserInputError(f"model {spec.name!r} changes node counts between layers; "
                             "its log-density is not defined, so there is no log-density graph")
    if model.has_current_scale:  # the graph folds I0 into B; per-device factors would be lost
        raise UserInputError(f"model {spec.name!r} is an emulated chip instance (per-device I0 factors); "
                             "export the ideal model's ONNX graph instead")
    g = _GraphBuilder()
    # a characterized cell's layers couple through the nodes' capacitance matrix (models.cell_law)
    with torch.no_grad():
        cell_ops = model.operators() if spec.cell is not None else None
    reverse = direction == "logprob"
    v = "z" if direction == "sample" else "x"
    v_in = v
    ell = None
    width = spec.data_dim
    order = range(len(steps) - 1, -1, -1) if reverse else range(len(steps))
    for k in order:
        layer, cl = spec.layers[k], model.layers[k]
        if layer.nodes != width:
            v = g.op("MatMul", v, g.tensor(f"resize_to_L{k}", _selection(width, layer.nodes, spec.pad_mode)))
            width = layer.nodes
        op = cl.operator("dense") if cell_ops is None else cell_ops[k]
        A, c = g.tensor(f"L{k}.A", op.A), g.tensor(f"L{k}.c", op.c)  # (nodes, edges), (edges,)
        B = g.tensor(f"L{k}.B", -op.B if reverse else op.B)  # (edges, nodes), 1/C and direction folded in
        law = cl.family.law  # the device table's act and act' (models.devices)
        w = g.tensor(f"L{k}.w", op.w[:, None]) if with_div and not law.constant_slope else ""  # (edges, 1)
        h = layer.duration / steps[k]
        if op.linear is not None:  # the cell's linear and constant terms, direction folded in
            L = g.tensor(f"L{k}.L", -op.linear if reverse else op.linear)
            m = g.tensor(f"L{k}.m", -op.bias if reverse else op.bias)
        else:
            L = m = None

        def field(x: str, A=A, B=B, c=c, w=w, law=law, op=op, L=L, m=m) -> tuple[str, str | None]:
            z = g.op("Add", g.op("MatMul", x, A), c)  # (batch, edges)
            values, memo = {LEAKY: spec.leaky_slope}, {}  # one node per distinct sub-expression
            i = onnx_expr(g, law.current, z, values, memo)
            slope = None if law.constant_slope else onnx_expr(g, law.slope, z, values, memo)
            dv = g.op("MatMul", i, B)
            if L is not None:
                dv = g.op("Add", dv, g.op("Add", g.op("MatMul", x, L), m))
            if not with_div:
                return dv, None
            if slope is None:  # identity devices: the divergence is the constant sum(w)
                zero = g.op("ReduceSum", g.op("Mul", x, g.scalar(0.0)), g.axes(1), keepdims=0)  # (batch,)
                return dv, g.op("Add", zero, g.scalar(float(op.w.sum())))
            div = g.op("Squeeze", g.op("MatMul", slope, w), g.axes(1))
            if L is not None:  # tr of the linear term: a constant per layer
                div = g.op("Add", div, g.scalar(float(torch.diagonal(op.linear).sum().detach())))
            return dv, div

        for _ in range(steps[k]):
            k1, d1 = field(v)
            k2, d2 = field(g.op("Add", v, g.op("Mul", k1, g.scalar(0.5 * h))))
            k3, d3 = field(g.op("Add", v, g.op("Mul", k2, g.scalar(0.5 * h))))
            k4, d4 = field(g.op("Add", v, g.op("Mul", k3, g.scalar(h))))
            mid = g.op("Mul", g.op("Add", k2, k3), g.scalar(2.0))
            v = g.op("Add", v, g.op("Mul", g.op("Add", g.op("Add", k1, mid), k4), g.scalar(h / 6)))
            if with_div:
                dmid = g.op("Mul", g.op("Add", d2, d3), g.scalar(2.0))
                inc = g.op("Mul", g.op("Add", g.op("Add", d1, dmid), d4), g.scalar(h / 6))
                ell = inc if ell is None else g.op("Add", ell, inc)
    if width != spec.data_dim:
        v = g.op("MatMul", v, g.tensor("resize_to_output", _selection(width, spec.data_dim, spec.pad_mode)))
    outs = (["x", "logq"] if direction == "sample" else ["z", "logp"]) if with_div else ["x"]
    g.nodes.append(g.helper.make_node("Identity", [v], [outs[0]], name="out_state"))
    if with_div:
        base = v if reverse else v_in
        sq = g.op("ReduceSum", g.op("Mul", base, base), g.axes(1), keepdims=0)
        logn = g.op("Sub", g.op("Mul", sq, g.scalar(-0.5)), g.scalar(0.5 * spec.data_dim * math.log(2 * math.pi)))
        g.nodes.append(g.helper.make_node("Sub", [logn, ell], [outs[1]], name="out_logdensity"))
    return g, v_in, outs


def onnx_graph(model: KirchhoffNet, direction: str, content_hash: str = "",
               steps: list[int] | None = None) -> bytes:
    """The serialized, checked ONNX model for ``direction`` (``sample`` or ``logprob``).

    Built node by node (no tracing: milliseconds, and byte-identical every time).
    Raises ValueError for a log-density graph of a non-bijective model.
    """
    import onnx
    from onnx import TensorProto, helper

    if direction not in ("sample", "logprob"):
        raise UserInputError(f"direction must be 'sample' or 'logprob', not {direction!r}")
    steps = steps or graph_steps(model)
    spec = model.spec
    d = spec.data_dim
    g, in_name, outs = _build(model, direction, steps)
    inputs = [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, ["batch", d])]
    outputs = [helper.make_tensor_value_info(outs[0], TensorProto.FLOAT, ["batch", d])]
    if len(outs) > 1:
        outputs.append(helper.make_tensor_value_info(outs[1], TensorProto.FLOAT, ["batch"]))
    graph = helper.make_graph(g.nodes, f"kirchhoffnet_{direction}", inputs, outputs, g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="kirchhoffnet-serve", producer_version="1")
    proto.ir_version = 8
    meta = {
        "knet.model": spec.name, "knet.version": spec.version, "knet.content_sha256": content_hash,
        "knet.direction": direction, "knet.method": "rk4",
        "knet.steps_per_layer": ",".join(str(s) for s in steps),
        "knet.layer_durations": ",".join(repr(layer.duration) for layer in spec.layers),
        "knet.end_time": repr(spec.end_time), "knet.data_dim": str(d), "knet.device": spec.device,
        "knet.inputs": in_name, "knet.outputs": ",".join(outs),
    }
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = (f"KirchhoffNet {spec.name} v{spec.version}: {direction} graph, fixed-step RK4 "
                        f"({sum(steps)} steps over {len(steps)} layers), float32, dynamic batch")
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def reference_outputs(model: KirchhoffNet, direction: str, inputs: Tensor,
                      steps: list[int] | None = None) -> list[Tensor]:
    """The torch model's own answer with the same fixed RK4 steps, float32, for parity."""
    steps = steps or graph_steps(model)
    solver = SolverConfig(method="rk4", steps_per_layer=tuple(steps) if len(steps) > 1 else steps[0])
    m = model if model.dtype == torch.float32 else _as_float32(model)
    with torch.no_grad():
        if direction == "sample":
            res = m.sample(len(inputs), solver=solver, z=inputs)
            return [res.x] if res.logp is None else [res.x, res.logp]
        res = m.log_prob(inputs, solver=solver)
        return [res.x, res.logp]


def _as_float32(model: KirchhoffNet) -> KirchhoffNet:
    import copy
    return copy.deepcopy(model).to(torch.float32)


def session(graph: bytes):
    """A single-threaded onnxruntime CPU session for ``graph``."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])


def parity(model: KirchhoffNet, direction: str, graph: bytes, inputs: Tensor) -> float:
    """max |ORT − torch| over every output of the graph for ``inputs (batch, d)``."""
    sess = session(graph)
    x = inputs.to(torch.float32)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    want = reference_outputs(model, direction, x)
    return max(float((torch.from_numpy(g) - w).abs().max()) for g, w in zip(got, want))


def benchmark(model: KirchhoffNet, direction: str, graph: bytes, batch: int, repeats: int = 5) -> dict:
    """Median seconds per call of onnxruntime and of the torch model (same RK4 steps, float32,
    one thread each) on a ``(batch, d)`` input; timed side by side."""
    sess = session(graph)
    x = torch.randn(batch, model.data_dim, generator=torch.Generator().manual_seed(0))
    feed = {sess.get_inputs()[0].name: x.numpy()}
    sess.run(None, feed)
    reference_outputs(model, direction, x)
    ort_t, torch_t = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, feed)
        ort_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        reference_outputs(model, direction, x)
        torch_t.append(time.perf_counter() - t)
    ort_s, torch_s = sorted(ort_t)[repeats // 2], sorted(torch_t)[repeats // 2]
    return {"direction": direction, "batch": batch, "ort_s": ort_s, "torch_s": torch_s,
            "speedup": torch_s / ort_s if ort_s > 0 else float("inf")}
