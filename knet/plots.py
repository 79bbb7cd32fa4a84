"""Pictures for people: loss curves, sample scatter plots and density heat maps (PNG)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.data import Task  # noqa: E402
from models.flow import KirchhoffNet  # noqa: E402

GRID = 160  # heat-map resolution per axis


def loss_curve(loss: list[float], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    y = np.asarray(loss, dtype=float)
    ax.plot(y, lw=0.6, alpha=0.4, color="tab:blue")
    if len(y) > 20:
        k = max(len(y) // 50, 5)
        ax.plot(np.arange(k - 1, len(y)), np.convolve(y, np.ones(k) / k, mode="valid"), color="tab:blue")
    ax.set(xlabel="iteration", ylabel="loss (nats)", title=f"{title}: training loss")
    lo, hi = np.nanpercentile(y, 1), np.nanpercentile(y, 99)
    ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def density_grid(model: KirchhoffNet, r: float, n: int = GRID) -> tuple[np.ndarray, np.ndarray]:
    """log q on an n×n grid over [−r, r]²: ``(axis (n,), logq (n, n))``."""
    axis = np.linspace(-r, r, n)
    xx, yy = np.meshgrid(axis, axis)
    pts = torch.tensor(np.stack([xx.ravel(), yy.ravel()], 1))
    with torch.no_grad():
        lp = torch.cat([model.log_prob(c).logp.double() for c in pts.split(4096)])
    return axis, lp.numpy().reshape(n, n)


def samples_figure(model: KirchhoffNet, task: Task, path: Path, n: int = 2048, seed: int = 0) -> None:
    """2-D: target | model density | model samples. Digits: a grid of sampled images."""
    with torch.no_grad():
        x = model.sample(n, torch.Generator().manual_seed(seed), with_logprob=False).x.double().cpu().numpy()
    if task.dim == 64:
        fig, axes = plt.subplots(4, 8, figsize=(8, 4.3))
        for ax, img in zip(axes.ravel(), x):
            ax.imshow(img.reshape(8, 8), cmap="gray_r", vmin=-2, vmax=2)
            ax.axis("off")
        fig.suptitle(f"{model.spec.name}: samples")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    r = task.plot_range
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.6))
    if task.kind == "data":
        d = task.sample(n, seed + 1).numpy()
        axes[0].scatter(d[:, 0], d[:, 1], s=1.5, alpha=0.5)
        axes[0].set_title("data")
    else:
        axis = np.linspace(-r, r, GRID)
        xx, yy = np.meshgrid(axis, axis)
        u = task.energy(torch.tensor(np.stack([xx.ravel(), yy.ravel()], 1))).numpy().reshape(GRID, GRID)
        axes[0].pcolormesh(axis, axis, np.exp(-u), shading="auto", cmap="magma")
        axes[0].set_title("target exp(−U)")
    axis, lp = density_grid(model, r)
    axes[1].pcolormesh(axis, axis, np.exp(lp), shading="auto", cmap="magma")
    axes[1].set_title("model density q(x)")
    axes[2].scatter(x[:, 0], x[:, 1], s=1.5, alpha=0.5, color="tab:orange")
    axes[2].set_title("model samples")
    for ax in axes:
        ax.set(xlim=(-r, r), ylim=(-r, r), aspect="equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(model.spec.name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
