"""Small deterministic circuits for tests (no zoo checkpoint needed), and what the shared HTTP
test server (tests/conftest.py ``server``) is started with."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from models.checkpoint import save_model
from models.config import CircuitSpec, LayerSpec, SolverConfig
from models.flow import KirchhoffNet
from models.topology import fully_connected

# limits of the shared test server, lowered so overload cases are quick to provoke
MAX_SAMPLES, MAX_POINTS, MAX_BODY, MAX_CONC = 4096, 500, 65536, 3
SERVER_ENV = {"KNET_SERVICE_MAX_SAMPLES": str(MAX_SAMPLES), "KNET_SERVICE_MAX_POINTS": str(MAX_POINTS),
              "KNET_SERVICE_MAX_BODY_BYTES": str(MAX_BODY), "KNET_SERVICE_MAX_CONCURRENCY": str(MAX_CONC),
              "KNET_SERVICE_RETRY_AFTER_S": "2",
              # the overhead benchmark's reference routes: checked by schemathesis with the rest
              "KNET_SERVICE_NOOP_ROUTES": "true"}


def run_knet(*args, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m knet ARGS`` with ``env`` added to the environment (captured, bounded)."""
    return subprocess.run([sys.executable, "-m", "knet", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def tiny_spec(name: str = "tiny", device: str = "affine-tanh", layers: int = 2, nodes: int = 2,
              repeat: int = 2, duration: float = 0.5, steps: int = 32) -> CircuitSpec:
    """A ``layers``-layer circuit of ``nodes`` data nodes, fully connected with ground."""
    layer = LayerSpec(duration=duration, nodes=nodes, edges=tuple(fully_connected(nodes, repeat, True)))
    return CircuitSpec(name=name, device=device, data_dim=nodes, layers=(layer,) * layers,
                       solver=SolverConfig(method="rk4", steps_per_layer=steps))


def tiny_model(dtype: torch.dtype = torch.float64, seed: int = 0, init_scale: float = 0.5, **kw) -> KirchhoffNet:
    model = KirchhoffNet(tiny_spec(**kw), init_scale=init_scale, seed=seed).to(dtype)
    model.requires_grad_(False)
    return model


def tiny_checkpoint(directory: Path, **kw) -> Path:
    """Write a tiny model checkpoint into ``directory`` and return it."""
    save_model(tiny_model(**kw), directory)
    return directory


# A hand-written `knet robustness` table (the format of models/robustness.py) for the tests of
# its summary (service/store.py) and of its downloads: the ideal NLL is 2.5 ± 0.01 nats, so a
# level stays "within the ideal" up to 2.5 + 1.96·0.01 = 2.5196 nats (or, without a density,
# while its distance interval reaches down into the ideal's [0.002, 0.006]).
def _row(effect, level, nll, ci):
    return {"effect": effect, "level": level, "nll": nll, "nll_se": None if nll is None else 0.01,
            "nll_worst": nll, "distance": sum(ci) / 2, "distance_ci": ci, "instances": 1}


ROBUSTNESS_DOC = {
    "model": "tiny3", "metric": "nll",
    "ideal": {"nll": 2.5, "nll_se": 0.01, "distance": 0.004, "distance_ci": [0.002, 0.006]},
    "rows": [_row("mismatch", 0.0, 2.5, [0.002, 0.006]), _row("mismatch", 0.005, 2.505, [0.002, 0.006]),
             _row("mismatch", 0.01, 2.515, [0.003, 0.007]), _row("mismatch", 0.02, 2.56, [0.01, 0.02]),
             _row("mismatch", 0.05, 2.9, [0.05, 0.08]),
             _row("quantization", 4, 3.4, [0.2, 0.3]), _row("quantization", 6, 2.7, [0.02, 0.03]),
             _row("quantization", 8, 2.51, [0.002, 0.006]), _row("quantization", 10, 2.5, [0.002, 0.006]),
             _row("noise", 1.0, None, [0.003, 0.007]), _row("noise", 0.1, None, [0.004, 0.008]),
             _row("noise", 0.01, None, [0.02, 0.03]),
             _row("adc", 6, None, [0.05, 0.07]), _row("adc", 8, None, [0.005, 0.009]),
             _row("adc", 10, None, [0.002, 0.006])],
}


def write_robustness(directory: Path, png: bytes | None = None) -> Path:
    """Write :data:`ROBUSTNESS_DOC` as robustness.json and .csv (and ``png`` as robustness.png)."""
    import csv
    import json
    (directory / "robustness.json").write_text(json.dumps(ROBUSTNESS_DOC, indent=1))
    with open(directory / "robustness.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ROBUSTNESS_DOC["rows"][0]))
        w.writeheader()
        w.writerows(ROBUSTNESS_DOC["rows"])
    if png is not None:
        (directory / "robustness.png").write_bytes(png)
    return directory
