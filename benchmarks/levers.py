"""Measure each engine lever on its own (``knet bench-levers``).

Prints one line per lever with the median CPU time (``time.process_time``: on a shared
machine it is steadier than wall time) of a full solve or of one evaluation, on freshly
initialised circuits of the zoo's architectures. docs/engine.md quotes the output.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.bench import BUILTIN_CONFIGS, SOURCE_ROOT
from models.circuit import autograd_divergence
from models.config import SolverConfig, TrainConfig
from models.flow import KirchhoffNet
from models.train import build_spec


def _model(name: str) -> KirchhoffNet:
    import yaml
    path = SOURCE_ROOT / "configs" / f"{name}.yaml"
    cfg = TrainConfig(**(yaml.safe_load(path.read_text()) if path.is_file() else BUILTIN_CONFIGS[name]))
    model = KirchhoffNet(build_spec(cfg), init_scale=cfg.architecture.init_scale, seed=cfg.seed)
    return model.requires_grad_(False)


def cpu_ms(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return statistics.median(times) * 1e3


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compile)")


def _compiled_path(engine, rk4: SolverConfig) -> None:
    """The compiled C path against the torch path (and NumPy's, at few rows), whole solves of
    the zoo's 2-D architectures with the divergence, side by side."""
    from models import engine_native
    if not engine_native.available():
        print("compiled path: not built (models._rk4 missing)")
        return
    for name in ("twomoon", "2spirals", "pinwheel"):
        m = _model(name)
        for batch in (1, 16, 256, 1024, 16384):
            v = torch.randn(batch, 2)
            r = 20 if batch <= 16 else 3
            native = cpu_ms(lambda v=v, m=m: engine.integrate(m, v, rk4, native=True), r)
            torch_ms = cpu_ms(lambda v=v, m=m: engine.integrate(m, v, rk4, small=False), r)
            small = (f" | NumPy {cpu_ms(lambda v=v, m=m: engine.integrate(m, v, rk4, small=True), r):.3f}"
                     if batch <= 16 else "")
            print(f"{name} batch {batch}: compiled {native:.3f} | torch {torch_ms:.3f}{small} "
                  f"| torch / compiled {torch_ms / native:.2f}x")


def run_from_args(args: argparse.Namespace) -> int:
    """Print one line per lever (CPU ms, median); returns the exit code."""
    from models import engine, engine_small  # engine internals, imported only when measured
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; CPU ms (median)")
    rk4 = SolverConfig(method="rk4", steps_per_layer=8)

    m = _model("twomoon")
    op = m.layers[0].operator("dense")
    for batch in (1, 1024):
        v = torch.randn(batch, 2)
        trace_ms = cpu_ms(lambda v=v: autograd_divergence(op, v))
        closed_ms = cpu_ms(lambda v=v: op.rhs_and_divergence(v))
        print(f"twomoon one evaluation, batch {batch}: autograd trace {trace_ms:.3f}"
              f" | closed form (core) {closed_ms:.3f}")
    z = torch.randn(1024, 2)
    zb = torch.randn(1024, 300)
    print(f"activation on 1024x300 float32: tanh {cpu_ms(lambda: torch.tanh(zb)):.3f} | sigmoid "
          f"{cpu_ms(lambda: torch.sigmoid(zb)):.3f} | float64 sigmoid {cpu_ms(lambda: torch.sigmoid(zb.double())):.3f}")
    m.engine_enabled = False
    generic = cpu_ms(lambda: m.integrate(z, rk4), 3)
    m.engine_enabled = True
    print(f"twomoon RK4 8 steps/layer, batch 1024: generic tableau loop {generic:.1f} | engine "
          f"{cpu_ms(lambda: m.integrate(z, rk4), 3):.1f}")
    old = engine.CPU_BLOCK_BYTES
    for block in (10**12, old):
        engine.CPU_BLOCK_BYTES = block
        zz = torch.randn(16384, 2)
        rows = engine.chunk_rows(engine.prepared_layers(m, False), 4)
        label = "unblocked" if block > old else f"blocked ({rows} rows)"
        ms = cpu_ms(lambda zz=zz: engine.integrate(m, zz, rk4, small=False), 1)  # blocking is the torch path's
        print(f"twomoon torch path batch 16384 {label}: {ms:.1f}")
    engine.CPU_BLOCK_BYTES = old
    m64 = _model("twomoon").double()
    print(f"twomoon engine batch 1024 float64: {cpu_ms(lambda: m64.integrate(z.double(), rk4), 3):.1f}")
    for batch in (1, 4, 16, 32, 64):
        v = torch.randn(batch, 2)
        small_ms = cpu_ms(lambda v=v: engine.integrate(m, v, rk4, small=True), 20)
        torch_ms = cpu_ms(lambda v=v: engine.integrate(m, v, rk4, small=False), 20)
        print(f"twomoon batch {batch}: NumPy small path {small_ms:.3f} | torch path {torch_ms:.3f}")
    _compiled_path(engine, rk4)

    d = _model("digits")
    for batch in (1, 16, 64, 1024):
        x = torch.randn(batch, 64)
        r = 3 if batch < 1024 else 1
        dense = cpu_ms(lambda x=x: engine.integrate(d, x, rk4, form="dense", small=False), r)
        gather = cpu_ms(lambda x=x: engine.integrate(d, x, rk4, form="gather", small=False), r)
        small = (f" | NumPy small path {cpu_ms(lambda x=x: engine.integrate(d, x, rk4, small=True), r):.1f}"
                 if batch <= engine_small.SMALL_BATCH_MAX else "")
        print(f"digits RK4 8 steps/layer batch {batch}: dense {dense:.1f} | gather {gather:.1f}{small}")

    if args.compile:
        L = engine.prepared_layers(m, False)[0]
        Wz, Wo = L.Wz, L.Wo

        def f(S: torch.Tensor) -> torch.Tensor:  # one evaluation, functional (no out=)
            s = torch.sigmoid(Wz @ S)
            return Wo @ torch.cat([s, s - s * s, torch.ones_like(s[:1])], 0)

        def layer(S: torch.Tensor) -> torch.Tensor:
            h = m.spec.layers[0].duration / 12
            for _ in range(12):
                k1 = f(S)
                k2 = f(S + 0.5 * h * k1)
                k3 = f(S + 0.5 * h * k2)
                k4 = f(S + h * k3)
                S = S + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
            return S
        for batch in (1, 1024):
            S = torch.zeros(4, batch)
            S[0] = 1.0
            S[1:3] = torch.randn(2, batch)
            t = time.perf_counter()
            compiled = torch.compile(layer, dynamic=False)
            compiled(S)
            print(f"torch.compile one twomoon layer (12 RK4 steps), batch {batch}: compile "
                  f"{time.perf_counter() - t:.0f} s | compiled {cpu_ms(lambda c=compiled, S=S: c(S), 5):.3f} | "
                  f"eager {cpu_ms(lambda S=S: layer(S), 5):.3f}")
    return 0
