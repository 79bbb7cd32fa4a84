"""Tasks: 2-D toy data sets, the 8×8 digits, and energies for density matching.

Definitions and scalings follow the CNF literature exactly so that NLLs compare:
twomoon, circle and swissroll come from scikit-learn; 2spirals, pinwheel and 8gaussians
follow FFJORD's generators. All generators are seeded and never download anything.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .errors import UserInputError


def twomoon(n: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import make_moons
    return make_moons(n_samples=n, noise=0.1, random_state=_seed(rng))[0]


def circle(n: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import make_circles
    return make_circles(n_samples=n, noise=0.06, factor=0.5, random_state=_seed(rng))[0]


def swissroll(n: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import make_swiss_roll
    return make_swiss_roll(n_samples=n, noise=1.0, random_state=_seed(rng))[0][:, [0, 2]] / 5.0


def two_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    half = (n + 1) // 2
    t = np.sqrt(rng.random((half, 1))) * 540 * (2 * np.pi) / 360
    x = -np.cos(t) * t + rng.random((half, 1)) * 0.5
    y = np.sin(t) * t + rng.random((half, 1)) * 0.5
    p = np.hstack([x, y])
    data = np.vstack([p, -p]) / 3 + rng.standard_normal((2 * half, 2)) * 0.1
    return rng.permutation(data)[:n]


def pinwheel(n: int, rng: np.random.Generator) -> np.ndarray:
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    rads = np.linspace(0, 2 * np.pi, arms, endpoint=False)
    f = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
    f[:, 0] += 1.0
    labels = np.concatenate([np.repeat(np.arange(arms), n // arms), rng.integers(0, arms, n % arms)])
    angles = rads[labels] + rate * np.exp(f[:, 0])
    c, s = np.cos(angles), np.sin(angles)
    x = np.stack([f[:, 0] * c + f[:, 1] * s, -f[:, 0] * s + f[:, 1] * c], axis=1)
    return 2 * rng.permutation(x)


def eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    angles = np.arange(8) * np.pi / 4
    centres = 4.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    x = rng.standard_normal((n, 2)) * 0.5 + centres[rng.integers(0, 8, n)]
    return x / 1.414


DIGITS_TRAIN = 1500  # images 0..1499 train, 1500..1796 are held out for evaluation


def digits_images(split: Literal["train", "test"]) -> np.ndarray:
    """sklearn's 8×8 digits as ``(images, 64)`` pixel values 0…16: the first
    :data:`DIGITS_TRAIN` for ``train``, the rest for ``test``."""
    from sklearn.datasets import load_digits
    images = load_digits().data.astype(np.float64)
    return images[:DIGITS_TRAIN] if split == "train" else images[DIGITS_TRAIN:]


def dequantize_digits(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixels 0…16 → the model space: uniformly dequantised and scaled to [−2, 2],
    x = 4·((pixel + u)/17 − ½), u ~ U[0, 1) (a volume factor of (4/17)⁶⁴ from pixel units)."""
    return 4.0 * ((images + rng.random(images.shape)) / 17.0 - 0.5)


def digits(n: int, rng: np.random.Generator, split: Literal["train", "test"] = "train") -> np.ndarray:
    """``n`` images drawn with replacement from ``split`` (:func:`digits_images`), dequantised
    (:func:`dequantize_digits`)."""
    pool = digits_images(split)
    return dequantize_digits(pool[rng.integers(0, len(pool), n)], rng)


def potential1(z: Tensor) -> Tensor:
    """Ring with two modes: U(z) = ½((‖z‖−2)/0.4)² − log(e^{−½((z₁−2)/0.6)²} + e^{−½((z₁+2)/0.6)²})."""
    r = z.norm(dim=1)
    w1 = -0.5 * ((z[:, 0] - 2) / 0.6) ** 2
    w2 = -0.5 * ((z[:, 0] + 2) / 0.6) ** 2
    return 0.5 * ((r - 2) / 0.4) ** 2 - torch.logsumexp(torch.stack([w1, w2]), dim=0)


def potential2(z: Tensor) -> Tensor:
    """Sine valley: U(z) = ½((z₂ − sin(2πz₁/4))/0.4)². Not normalisable: U is periodic in z₁ and
    bounded along it, so ∫ exp(−U) dz diverges and E[log q + U] has no lower bound."""
    return 0.5 * ((z[:, 1] - torch.sin(2 * math.pi * z[:, 0] / 4)) / 0.4) ** 2


@dataclass(frozen=True)
class Task:
    """A training task: data samples (generation) or an energy U(x) (density matching)."""

    name: str
    kind: Literal["data", "energy"]
    dim: int
    sampler: Callable[..., np.ndarray] | None = None
    energy: Callable[[Tensor], Tensor] | None = None
    plot_range: float = 4.0
    # for an energy whose exp(−U) does not integrate (potential2): the half-width of the box
    # [−b, b]^dim on which models.evaluate scores the KL instead (and the mass q puts outside)
    box_half_width: float | None = None

    def sample(self, n: int, seed: int | np.random.Generator = 0, split: str = "train") -> Tensor:
        """``(n, dim)`` float64 tensor of data points; ValueError for energy tasks."""
        if self.sampler is None:
            raise UserInputError(f"task {self.name!r} is an energy; it has no data to sample")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        data = self.sampler(n, rng, split) if self.name == "digits" else self.sampler(n, rng)
        return torch.as_tensor(np.asarray(data), dtype=torch.float64)


TASKS: dict[str, Task] = {
    "twomoon": Task("twomoon", "data", 2, twomoon, plot_range=2.5),
    "circle": Task("circle", "data", 2, circle, plot_range=1.5),
    "swissroll": Task("swissroll", "data", 2, swissroll, plot_range=3.0),
    "2spirals": Task("2spirals", "data", 2, two_spirals, plot_range=4.0),
    "pinwheel": Task("pinwheel", "data", 2, pinwheel, plot_range=4.0),
    "8gaussians": Task("8gaussians", "data", 2, eight_gaussians, plot_range=4.0),
    "potential1": Task("potential1", "energy", 2, energy=potential1, plot_range=4.0),
    "potential2": Task("potential2", "energy", 2, energy=potential2, plot_range=4.0, box_half_width=4.0),
    "digits": Task("digits", "data", 64, digits, plot_range=2.0),
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise UserInputError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}") from None


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))
