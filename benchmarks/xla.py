"""The JAX/XLA peer: the same circuits and RK4 steps, jit-compiled by XLA for one CPU thread.

A performance-minded user's next choice after our engine: the model's vector field written in
JAX, every solve one ``jax.jit`` program. Written as a JAX user who cares about speed would:

- float32 throughout, XLA pinned to one thread (:data:`XLA_FLAGS`, set before JAX starts);
- the whole solve is one compiled program: ``lax.scan`` over the layers (stacked weights), a
  ``lax.fori_loop`` over each layer's RK4 steps, all four stages and the log-density channel
  fused by XLA, the prior's log-density included; no Python loop runs per step;
- the input buffer is donated (``donate_argnums``) and the answer waited for with
  ``block_until_ready``;
- both forms of the right-hand side: ``dense`` (two matrix products per evaluation, XLA's dot
  emitter) and ``gather`` (``v[:, src]``, ``v[:, dst]`` and a scatter-add of the currents, the
  form whose cost grows with the devices only);
- batch sizes bucketed as a service using XLA would: XLA compiles one program per shape, so a
  request is padded to the next power of two (at most :data:`MAX_BUCKET` rows at once) and the
  programs of the buckets are compiled ahead of timing; compile time is reported apart.

Every peer answer is checked against ours (:meth:`XlaPeer.check`) before anything is timed.
JAX is optional (``pip install -e '.[peers]'``, pinned in pyproject.toml); :func:`jax_status`
says why it cannot run where it cannot.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from models.engine_layers import GatherLayer
from models.flow import KirchhoffNet

# one thread: no Eigen thread pool inside XLA's CPU kernels, one intra-op thread
XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
MAX_BUCKET = 16384
FORMS = ("dense", "gather")
DENSE_MAX_NODES = 64  # the dense form's (N, E) matrices: 157 MB per layer at 784 nodes, seconds per solve
AGREE_ATOL = 2e-4  # peer vs ours, max |Δ| of x and of log p over |log p| + 1: float32 rounding of two programs


def jax_status() -> tuple[object | None, str]:
    """``(jax, version)`` where JAX imports (configured for one CPU thread, float32), else
    ``(None, why)``."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " " + XLA_FLAGS).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    try:
        import jax
    except ImportError:
        return None, "JAX not installed (pip install -e '.[peers]')"
    jax.config.update("jax_enable_x64", False)
    return jax, f"jax {jax.__version__}"


def bucket(rows: int) -> int:
    """The compiled batch size that serves ``rows`` rows: the next power of two."""
    if not 1 <= rows <= MAX_BUCKET:
        raise ValueError(f"the peer compiles buckets of 1..{MAX_BUCKET} rows, not {rows}")
    return 1 << (rows - 1).bit_length()


_ACTIVATIONS = {  # act(z), act'(z) from y = act(z): the device table's laws (models/devices.py) in jnp
    "tanh": (lambda jnp, z, s: jnp.tanh(z), lambda jnp, z, y, s: 1.0 - y * y),
    "relu": (lambda jnp, z, s: jnp.maximum(z, 0.0), lambda jnp, z, y, s: (z > 0).astype(z.dtype)),
    "leaky_relu": (lambda jnp, z, s: jnp.where(z > 0, z, s * z),
                   lambda jnp, z, y, s: jnp.where(z > 0, 1.0, s).astype(z.dtype)),
    "identity": (lambda jnp, z, s: z, lambda jnp, z, y, s: jnp.ones_like(z)),
}


def _stacked(model: KirchhoffNet, form: str) -> dict[str, np.ndarray]:
    """Every layer's weights in ``form``, stacked along a leading layer axis (float32 numpy)."""
    f32 = lambda t: t.detach().cpu().to(torch.float32).numpy()  # noqa: E731
    per_layer = []
    with torch.no_grad():
        for layer in model.layers:
            op = layer.operator(form)
            if form == "dense":
                per_layer.append(dict(A=f32(op.A), c=f32(op.c), B=f32(op.B), w=f32(op.w)))
            else:  # the torch gather layer's folding, direct form (gain 1, no offsets)
                g = GatherLayer.from_operator(op, layer.family.law.direct(layer.leaky_slope), 1.0)
                per_layer.append(dict(src=g.src.numpy().astype(np.int32), dst=g.dst.numpy().astype(np.int32),
                                      a=f32(g.a[:, 0]), b=f32(g.b[:, 0]), c=f32(g.c[:, 0]),
                                      inv_cap=f32(g.scale[1:layer.nodes + 1, 0]), w=f32(op.w)))
    return {k: np.stack([p[k] for p in per_layer]) for k in per_layer[0]}


@dataclass
class XlaPeer:
    """One model's solves as XLA programs, in one form; ``compile_s`` per (kind, bucket)."""

    model: KirchhoffNet
    form: str
    compile_s: dict = field(default_factory=dict)

    def __post_init__(self):
        jax, why = jax_status()
        if jax is None:
            raise RuntimeError(why)
        m = self.model
        if not m.spec.bijective or m.spec.solver.method != "rk4":
            raise ValueError("the XLA peer runs bijective circuits with the RK4 serving solver")
        if len({len(layer.edges) for layer in m.spec.layers}) != 1:
            raise ValueError("the XLA peer stacks layers of one edge count")
        self.jax = jax
        self.weights = {k: jax.numpy.asarray(v) for k, v in _stacked(m, self.form).items()}
        n = len(m.spec.layers)
        steps = [m.spec.solver.steps_for(k, n) for k in range(n)]
        self.steps = np.asarray(steps, np.int32)
        self.h = np.asarray([lay.duration / s for lay, s in zip(m.spec.layers, steps)], np.float32)
        self._programs: dict = {}

    def _program(self, kind: str, rows: int):
        key = (kind, rows)
        if key not in self._programs:
            jax = self.jax
            fn = jax.jit(_solve_fn(jax, self.form, self.model, reverse=kind == "logprob"), donate_argnums=(0,))
            x = np.zeros((rows, self.model.data_dim), np.float32)
            t = time.perf_counter()
            compiled = fn.lower(jax.numpy.asarray(x), self.weights, self.steps, self.h).compile()
            self.compile_s[key] = time.perf_counter() - t
            self._programs[key] = compiled
        return self._programs[key]

    def prepare(self, kind: str, rows: int) -> None:
        """Compile the bucket that serves ``rows`` rows (the service's warm-up)."""
        self._program(kind, bucket(rows))

    def run(self, kind: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(x_out (rows, d), logp (rows,))`` for ``x (rows, d)``: latents → samples and log q for
        ``sample``, points → latents and log p for ``logprob``; the rows padded to their bucket."""
        rows = x.shape[0]
        b = bucket(rows)
        if b != rows:
            x = np.concatenate([x, np.zeros((b - rows, x.shape[1]), x.dtype)])
        out, logp = self._program(kind, b)(self.jax.numpy.asarray(x), self.weights, self.steps, self.h)
        out.block_until_ready()
        logp.block_until_ready()
        return np.asarray(out)[:rows], np.asarray(logp)[:rows]

    def check(self, kind: str, x: np.ndarray, ours_x: np.ndarray, ours_logp: np.ndarray) -> float:
        """Run the peer on ``x`` and compare with our answers; returns the larger of max |Δx| and
        max |Δ log p| / (1 + |log p|). ValueError above :data:`AGREE_ATOL`."""
        px, plp = self.run(kind, x)
        dx = float(np.abs(px - ours_x).max())
        dl = float((np.abs(plp - ours_logp) / (1.0 + np.abs(ours_logp))).max())
        if not (dx <= AGREE_ATOL and dl <= AGREE_ATOL):
            raise ValueError(f"XLA peer ({self.form}) disagrees with ours on {kind}: |Δx| {dx:.2e}, "
                             f"|Δ log p| {dl:.2e} (relative) > {AGREE_ATOL:g}")
        return max(dx, dl)


def _solve_fn(jax, form: str, model: KirchhoffNet, reverse: bool):
    """The whole solve as one function of ``(x (B, d), weights, steps (L,), h (L,))`` →
    ``(x_out, logp)``: scan over layers (reversed for log p), fori_loop over RK4 steps."""
    jnp, lax = jax.numpy, jax.lax
    act, slope = _ACTIVATIONS[model.layers[0].family.activation]
    leaky = float(model.spec.leaky_slope)
    sign = -1.0 if reverse else 1.0
    n_nodes = model.data_dim
    log_2pi = math.log(2 * math.pi)

    def field_dense(w, v):
        z = v @ w["A"] + w["c"]
        y = act(jnp, z, leaky)
        return sign * (y @ w["B"]), slope(jnp, z, y, leaky) @ w["w"]

    def field_gather(w, v):
        vp = jnp.pad(v, ((0, 0), (1, 0)))  # column 0: ground, 0 V
        z = w["a"] * vp[:, w["src"]] + w["b"] * vp[:, w["dst"]] + w["c"]
        y = act(jnp, z, leaky)
        i = jnp.zeros((v.shape[0], n_nodes + 1), v.dtype).at[:, w["dst"]].add(y).at[:, w["src"]].add(-y)
        return sign * (i[:, 1:] * w["inv_cap"]), slope(jnp, z, y, leaky) @ w["w"]

    field_fn = field_dense if form == "dense" else field_gather

    def layer(carry, xs):
        w, n, h = xs

        def step(_, state):
            v, ell = state
            k1, d1 = field_fn(w, v)
            k2, d2 = field_fn(w, v + (0.5 * h) * k1)
            k3, d3 = field_fn(w, v + (0.5 * h) * k2)
            k4, d4 = field_fn(w, v + h * k3)
            return v + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4), ell + (h / 6) * (d1 + 2 * d2 + 2 * d3 + d4)

        return lax.fori_loop(0, n, step, carry), None

    def solve(x, weights, steps, h):
        ell0 = jnp.zeros(x.shape[0], x.dtype)
        (v, ell), _ = lax.scan(layer, (x, ell0), (weights, steps, h), reverse=reverse)
        z = v if reverse else x
        return v, -0.5 * jnp.sum(z * z, axis=1) - 0.5 * n_nodes * log_2pi - ell

    return solve
