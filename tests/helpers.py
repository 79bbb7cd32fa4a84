"""Small deterministic circuits for tests (no zoo checkpoint needed)."""
from __future__ import annotations

from pathlib import Path

import torch

from models.checkpoint import save_model
from models.config import CircuitSpec, LayerSpec, SolverConfig
from models.flow import KirchhoffNet
from models.topology import fully_connected


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
