"""The operating range a trained model asks of its devices: what a cell must be characterized over.

Test points of the model's task are carried from data back to the latent (the log-density
direction, fixed-step RK4 in float64 through the model's own operators) and at every stage
of every step the devices' arguments z = a·v_s + b·v_d + c and the node voltages are
recorded; their extremes and 0.1/99.9 % quantiles are the range ``knet cells characterize``
sweeps and reports the law's error over.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from models.data import get_task
from models.flow import KirchhoffNet, resize_nodes

STEPS_PER_LAYER = 16


@dataclass(frozen=True)
class OperatingRange:
    """Device arguments z and node voltages (model volts) over ``points`` trajectories;
    ``lowest``/``highest``: each trajectory's extreme node voltage ``(points,)``."""

    points: int
    z_min: float
    z_max: float
    z_p001: float
    z_p999: float
    v_min: float
    v_max: float
    lowest: np.ndarray
    highest: np.ndarray

    def outside(self, lo: float, hi: float) -> float:
        """The share of trajectories whose nodes leave [lo, hi] somewhere."""
        return float(np.mean((self.lowest < lo) | (self.highest > hi)))


def operating_range(model: KirchhoffNet, task: str, points: int = 8192, seed: int = 1) -> OperatingRange:
    """Trajectories of ``points`` test samples of ``task`` through ``model`` (see module doc)."""
    m = copy.deepcopy(model).to(torch.float64)
    x = get_task(task).sample(points, seed, split="test").to(torch.float64)
    zs, vs = [], [x]
    lowest, highest = x.min(dim=1).values, x.max(dim=1).values
    with torch.no_grad():
        v = x
        for op, layer in zip(reversed(m.operators()), reversed(m.spec.layers)):
            v = resize_nodes(v, layer.nodes, m.spec.pad_mode)
            h = layer.duration / STEPS_PER_LAYER
            f = lambda u, op=op: -op.rhs(u)  # noqa: E731 (reverse time)
            for _ in range(STEPS_PER_LAYER):
                stages = [v]
                k1 = f(v)
                stages.append(v + 0.5 * h * k1)
                k2 = f(stages[-1])
                stages.append(v + 0.5 * h * k2)
                k3 = f(stages[-1])
                stages.append(v + h * k3)
                k4 = f(stages[-1])
                v = v + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
                for s in stages:
                    zs.append(op._pre_activation(s).flatten())
                vs.append(v)
                lowest = torch.minimum(lowest, v.min(dim=1).values)
                highest = torch.maximum(highest, v.max(dim=1).values)
    z, vv = torch.cat(zs), torch.cat([t.flatten() for t in vs])
    q = torch.quantile(z[torch.randperm(z.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]],
                       torch.tensor([0.001, 0.999], dtype=z.dtype))
    return OperatingRange(points, float(z.min()), float(z.max()), float(q[0]), float(q[1]), float(vv.min()),
                          float(vv.max()), lowest.numpy(), highest.numpy())
