"""Honest peers for the 64-D digits model: the same data, split, scaling and test points.

    knet bench-peers [--budget-s 276] [--flows maf nsf] [--out benchmarks/results/peers-digits.json]

Every model is scored exactly as ``knet eval digits`` scores the zoo model: −mean log-density
(nats, in the scaled space of models/data.py) of 2048 dequantised draws (seed 20240101) from
the 297 held-out images. The peers see the 1500 training images only, split by image into 1300
for fitting and 200 for validation (model choice, early stopping); the zoo model trained on all
1500 without a validation split, so the peers have slightly less data to fit.

- ``gaussian``: one full-covariance Gaussian (maximum likelihood, scikit-learn), fitted to ten
  dequantised draws per image.
- ``gmm-K``: Gaussian mixtures of K full-covariance components, K chosen on the validation split.
- ``maf``, ``nsf``: zuko's masked autoregressive flow and neural spline flow (a maintained
  library), sized near the zoo model's parameter count; Adam, 256-row batches of fresh
  dequantisations, trained for ``--budget-s`` seconds (default: the zoo digits model's own
  training time) and early-stopped on the validation NLL, keeping the best weights.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from models.data import dequantize_digits, digits_images, get_task
from models.errors import UserInputError

EVAL_POINTS, EVAL_SEED = 2048, 20_240_101  # knet eval's draw for digits (models/zoo.py)
VALIDATION_IMAGES = 200
ZOO_DIGITS_TRAIN_S = 276.0  # the zoo digits model's training time, 4.6 min (docs/zoo.md)
# zuko flows near the zoo digits model's 9432 parameters (dense counts, masked weights included)
FLOWS = {"maf": dict(transforms=2, hidden_features=(24,)),
         "nsf": dict(transforms=2, hidden_features=(5,), bins=4)}


@dataclass
class PeerResult:
    """One peer: test NLL ± s.e. (nats), its validation NLL, size and time."""

    name: str
    nll: float
    nll_se: float
    validation_nll: float
    parameters: int
    fit_s: float
    note: str = ""


def splits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """(fit images, validation images, test points): the training images split by image, and
    ``knet eval``'s test points for digits ``(2048, 64)``."""
    images = digits_images("train")
    order = np.random.default_rng(seed).permutation(len(images))
    test = get_task("digits").sample(EVAL_POINTS, EVAL_SEED, split="test")
    return images[order[VALIDATION_IMAGES:]], images[order[:VALIDATION_IMAGES]], test


def _draws(images: np.ndarray, per_image: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return dequantize_digits(np.repeat(images, per_image, axis=0), rng)


def _score(logp: np.ndarray) -> tuple[float, float]:
    return float(-logp.mean()), float(logp.std(ddof=1) / math.sqrt(len(logp)))


def fit_mixtures(fit: np.ndarray, val: np.ndarray, test: np.ndarray, components=(1, 2, 5, 10, 20),
                 seed: int = 0) -> list[PeerResult]:
    """The Gaussian (K = 1) and the mixture whose K scores best on ``val``."""
    from sklearn.mixture import GaussianMixture
    x_fit, x_val = _draws(fit, 10, seed), _draws(val, 10, seed + 1)
    d = x_fit.shape[1]
    results = []
    for k in components:
        t = time.perf_counter()
        gm = GaussianMixture(k, covariance_type="full", reg_covar=1e-6, random_state=seed, max_iter=500).fit(x_fit)
        nll, se = _score(gm.score_samples(test))
        results.append(PeerResult("gaussian" if k == 1 else f"gmm-{k}", nll, se, float(-gm.score(x_val)),
                                  k * (d + d * (d + 1) // 2) + (k - 1), time.perf_counter() - t))
    best = min(results[1:], key=lambda r: r.validation_nll) if len(results) > 1 else None
    return [results[0]] + ([best] if best else [])


def fit_flow(kind: str, fit: np.ndarray, val: np.ndarray, test: np.ndarray, budget_s: float,
             seed: int = 0, batch: int = 256, lr: float = 1e-3, eval_every: int = 25,
             patience: int = 40, progress=None) -> PeerResult:
    """A zuko flow (``kind`` in :data:`FLOWS`) trained for at most ``budget_s`` seconds with
    early stopping on the validation NLL (checked every ``eval_every`` steps; best weights kept)."""
    import zuko
    torch.manual_seed(seed)
    flow = (zuko.flows.MAF if kind == "maf" else zuko.flows.NSF)(fit.shape[1], **FLOWS[kind]).double()
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    x_val = torch.as_tensor(_draws(val, 10, seed + 1))
    best, best_state, since, steps = math.inf, None, 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < budget_s and since < patience:
        for _ in range(eval_every):
            xb = torch.as_tensor(dequantize_digits(fit[rng.integers(0, len(fit), batch)], rng))
            loss = -flow().log_prob(xb).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        with torch.no_grad():
            v = float(-flow().log_prob(x_val).mean())
        if v < best:
            best, best_state, since = v, {k: p.clone() for k, p in flow.state_dict().items()}, 0
        else:
            since += 1
        if progress:
            progress(kind, steps, v, best)
    fit_s = time.perf_counter() - started
    flow.load_state_dict(best_state)
    with torch.no_grad():
        nll, se = _score(flow().log_prob(test).numpy())
    stop = "early-stopped" if since >= patience else "time budget"
    return PeerResult(kind, nll, se, best, sum(p.numel() for p in flow.parameters()), fit_s,
                      f"{steps} steps, {stop}; {FLOWS[kind]}")


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--budget-s", type=float, default=ZOO_DIGITS_TRAIN_S,
                    help="training seconds per flow (default: the zoo digits model's, %(default)s)")
    ap.add_argument("--flows", nargs="*", choices=sorted(FLOWS), default=sorted(FLOWS), help="zuko flows to train")
    ap.add_argument("--components", nargs="+", type=int, default=[1, 2, 5, 10, 20],
                    help="mixture sizes to try (1 is the single Gaussian)")
    ap.add_argument("--out", type=Path, help="also write the rows to this JSON file")


def run_from_args(args: argparse.Namespace) -> int:
    """Fit every peer, print the table (and write ``--out``); returns the exit code."""
    if args.budget_s <= 0 or any(k < 1 for k in args.components) or 1 not in args.components:
        raise UserInputError("--budget-s must be > 0 and --components positive, including 1 (the Gaussian)")
    from tqdm import tqdm
    if args.flows:
        try:
            import zuko  # noqa: F401
        except ImportError:
            raise UserInputError("the flows need zuko: pip install -e '.[peers]' "
                                 "(or pass --flows with no names)") from None
    fit, val, test = splits()
    rows = fit_mixtures(fit, val, test.numpy(), tuple(sorted(set(args.components))))
    for kind in args.flows:
        with tqdm(total=round(args.budget_s), desc=f"peer {kind}", unit="s", leave=False) as bar:
            t0 = time.perf_counter()

            def progress(kind, steps, v, best, bar=bar, t0=t0):
                bar.set_postfix(steps=steps, val=f"{v:.2f}", best=f"{best:.2f}", refresh=False)
                bar.update(min(round(time.perf_counter() - t0), bar.total) - bar.n)  # redraws at most 10×/s
            rows.append(fit_flow(kind, fit, val, test, args.budget_s, progress=progress))
    print(f"{'peer':<10}{'test NLL (nats)':>20}{'val NLL':>10}{'params':>9}{'fit s':>8}  note")
    for r in rows:
        print(f"{r.name:<10}{r.nll:>12.2f} ± {r.nll_se:<5.2f}{r.validation_nll:>10.2f}{r.parameters:>9}"
              f"{r.fit_s:>8.0f}  {r.note}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"eval": {"points": EVAL_POINTS, "seed": EVAL_SEED, "split": "test"},
                                        "rows": [asdict(r) for r in rows]}, indent=1) + "\n")
    return 0
