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
    if task.dim == 64:
        n = 32  # only a 4×8 grid of images is drawn
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


def _mosaic(images: np.ndarray, side: int, gap: int = 1) -> np.ndarray:
    """``(k, 64)`` 8×8 images → one ``(side·9−1, side·9−1)`` mosaic, NaN between tiles."""
    tile = 8 + gap
    out = np.full((side * tile - gap, side * tile - gap), np.nan)
    for k, img in enumerate(images[: side * side]):
        r, c = divmod(k, side)
        out[r * tile: r * tile + 8, c * tile: c * tile + 8] = img.reshape(8, 8)
    return out


def zoo_figure(entries: list[tuple[KirchhoffNet, Task, dict]], path: Path, grid: int = GRID // 2,
               seed: int = 0) -> None:
    """One panel per model: the learned density q(x) for 2-D models, sampled images for
    digits; each titled with its name and evaluation figure (``eval.json`` content)."""
    cols = min(3, len(entries))
    rows = -(-len(entries) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 3.4 * rows), squeeze=False,
                             layout="constrained")
    for ax, (model, task, ev) in zip(axes.ravel(), entries):
        if task.dim == 2:
            axis, lp = density_grid(model, task.plot_range, grid)
            ax.pcolormesh(axis, axis, np.exp(lp), shading="auto", cmap="magma")
            ax.set_aspect("equal")
        else:
            with torch.no_grad():
                x = model.sample(36, torch.Generator().manual_seed(seed), with_logprob=False).x
            ax.imshow(_mosaic(x.double().cpu().numpy(), 6), cmap="gray_r", vmin=-2, vmax=2)
        figure = (f"NLL {ev['nll']:.3f}" if "nll" in ev else f"E[log q+U] {ev['elbo']:.3f}") if ev else ""
        ax.set_title(f"{model.spec.name}\n{figure}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[len(entries):]:
        ax.axis("off")
    fig.savefig(path, dpi=100)
    plt.close(fig)
