"""Training: maximum likelihood (generation) or reverse-KL density matching.

Backpropagates through the solver (fixed-step RK4 by default: cheap and exact gradients of
the discretised flow). Checkpoints are atomic and resumable; under ``torchrun`` the
gradients are averaged over processes (gloo on CPU), and only rank 0 writes.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import topology
from .checkpoint import TRAIN_STATE_FILE, BeforeRename, atomic_write, remove_stale_temp_files, save_model
from .config import CircuitSpec, LayerSpec, TrainConfig
from .data import Task, get_task
from .flow import KirchhoffNet, standard_normal_log_prob


@dataclass
class TrainHistory:
    """Loss per iteration (nats) and wall time; saved with the checkpoint."""

    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0


def build_spec(cfg: TrainConfig) -> CircuitSpec:
    """The architecture a :class:`TrainConfig` describes."""
    task = get_task(cfg.task)
    arch = cfg.architecture
    nodes = arch.nodes or task.dim
    edges = tuple(topology.build(arch.topology, nodes))
    layer = LayerSpec(duration=arch.end_time / arch.layers, nodes=nodes, edges=edges)
    return CircuitSpec(name=cfg.name, device=arch.device, data_dim=task.dim, layers=(layer,) * arch.layers,
                       hardware=cfg.hardware, solver=cfg.serve_solver, cell=cfg.cell)


def build_model(cfg: TrainConfig) -> KirchhoffNet:
    return KirchhoffNet(build_spec(cfg), init_scale=cfg.architecture.init_scale, seed=cfg.seed)


def loss_fn(model: KirchhoffNet, task: Task, cfg: TrainConfig, rng: np.random.Generator,
            batch: int) -> torch.Tensor:
    """One Monte-Carlo estimate of the objective, nats (scalar)."""
    if cfg.hardware_aware is not None:
        return _hardware_aware_loss(model, task, cfg, rng, batch)
    if cfg.objective == "likelihood":
        x = task.sample(batch, rng).to(model.dtype)
        res = model.log_prob(x, cfg.train_solver)
        return -res.logp.mean()
    z = torch.as_tensor(rng.standard_normal((batch, task.dim)), dtype=model.dtype)
    res = model.sample(batch, z=z, solver=cfg.train_solver)
    return (res.logp + task.energy(res.x)).mean()


def _hardware_aware_loss(model: KirchhoffNet, task: Task, cfg: TrainConfig, rng: np.random.Generator,
                         batch: int) -> torch.Tensor:
    """The objective averaged over freshly drawn chip instances (``cfg.hardware_aware``): the
    batch is split among K instances, each an exact flow (mismatch, quantization with
    straight-through gradients, switching); one batched solve over the K chips."""
    from .chip import chip_plan
    hw = cfg.hardware_aware
    seeds = [int(s) for s in rng.integers(0, 2**31 - 1, hw.instances)]
    plan = chip_plan(model, hw.chip(0), instances=seeds, solver=cfg.train_solver, straight_through=True)
    ops = plan.operators(model)
    per = max(batch // hw.instances, 1)
    if cfg.objective == "likelihood":
        x = task.sample(per * hw.instances, rng).to(model.dtype).reshape(hw.instances, per, task.dim)
        z, ell, _ = model.integrate(x, cfg.train_solver, reverse=True, operators=ops, layers=plan.layers,
                                    steps=plan.steps)
        return -(standard_normal_log_prob(z) - ell).mean()
    z = torch.as_tensor(rng.standard_normal((hw.instances, per, task.dim)), dtype=model.dtype)
    x, ell, _ = model.integrate(z, cfg.train_solver, operators=ops, layers=plan.layers, steps=plan.steps)
    energy = task.energy(x.reshape(-1, task.dim)).reshape(hw.instances, per)
    return (standard_normal_log_prob(z) - ell + energy).mean()


def initial_model(cfg: TrainConfig) -> KirchhoffNet:
    """The model a run starts from: fresh (seeded) or, with ``init_from``, the weights of a
    zoo model or checkpoint directory of the same architecture (fine-tuning).

    Raises:
        ValueError: ``init_from`` names no checkpoint, or one of another architecture.
    """
    model = build_model(cfg)
    if cfg.init_from is None:
        return model
    from .checkpoint import load_model
    from .zoo import resolve
    source = load_model(resolve(cfg.init_from))
    if [l.edges for l in source.spec.layers] != [l.edges for l in model.spec.layers] \
            or source.spec.device != model.spec.device:
        raise ValueError(f"init_from {cfg.init_from!r} has another architecture than config {cfg.name!r}")
    with torch.no_grad():
        for mine, theirs in zip(model.layers, source.layers):
            for k, p in mine.params.items():
                p.copy_(theirs.params[k].to(p.dtype))
    model.make_realisable()  # a cell-realised run starts inside the cell's limits
    return model


class WeightAverage:
    """Exponential moving average of a model's parameters (``decay`` per iteration), started at
    the initial weights. The average is the model a run saves and returns: it smooths the
    last iterations' noise, which at a small learning rate is what separates runs."""

    def __init__(self, model: KirchhoffNet, decay: float):
        self.decay = decay
        self.shadow = {k: p.detach().clone() for k, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: KirchhoffNet) -> None:
        for k, p in model.named_parameters():
            self.shadow[k].lerp_(p.detach(), 1.0 - self.decay)

    @contextmanager
    def applied(self, model: KirchhoffNet):
        """Within the block, ``model`` holds the averaged weights; its own come back after."""
        own = {k: p.detach().clone() for k, p in model.named_parameters()}
        _assign(model, self.shadow)
        try:
            yield model
        finally:
            _assign(model, own)


def _served(model: KirchhoffNet, ema: WeightAverage | None):
    """Context: ``model`` holding the weights a run serves (the moving average, if kept)."""
    return ema.applied(model) if ema is not None else nullcontext(model)


@torch.no_grad()
def _assign(model: KirchhoffNet, values: dict[str, torch.Tensor]) -> None:
    for k, p in model.named_parameters():
        p.copy_(values[k])


def learning_rate(cfg: TrainConfig, it: int) -> float:
    """Cosine decay from ``lr`` to ``lr_final`` over the run."""
    frac = min(it / max(cfg.iterations - 1, 1), 1.0)
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * frac))


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = True, progress: bool = True,
          distributed: bool = False,
          on_checkpoint: Callable[[KirchhoffNet, TrainHistory], None] | None = None,
          checkpoint_before_rename: BeforeRename | None = None,
          ) -> tuple[KirchhoffNet, TrainHistory]:
    """Train the model described by ``cfg``, checkpointing into ``out_dir``.

    Resumes from ``out_dir/train_state.pt`` when present and ``resume`` is set: parameters,
    optimiser state, loss history and torch's global random state, so a resumed run is
    bit-identical to an uninterrupted one. With ``cfg.ema_decay`` the saved and returned model
    is the weights' moving average (:class:`WeightAverage`), which the train state carries
    beside the raw weights. ``checkpoint_before_rename`` is the fault-injection
    hook of every checkpoint file write (:data:`models.checkpoint.BeforeRename`). Returns the
    trained model and its loss history.
    """
    out = Path(out_dir)
    rank, world = 0, 1
    if distributed:
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    task = get_task(cfg.task)
    model = initial_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history, start, averaged = _resume(out, model, opt) if resume else (TrainHistory(), 0, None)
    if distributed:  # every rank starts from rank 0's parameters
        for p in model.parameters():
            torch.distributed.broadcast(p.data, 0)
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    if ema is not None and averaged is not None:
        ema.shadow = averaged
    per_rank = max(cfg.batch_size // world, 1)
    bar = _progress(range(start, cfg.iterations), cfg, progress and rank == 0, start)
    t0 = time.perf_counter()
    for it in bar:
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, it)
        rng = np.random.default_rng([cfg.seed, it, rank])
        loss_value = _optimizer_step(model, opt, loss_fn(model, task, cfg, rng, per_rank), cfg, world, ema)
        history.loss.append(loss_value)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{learning_rate(cfg, it):.1e}")
        last = it + 1 == cfg.iterations
        if rank == 0 and ((it + 1) % cfg.checkpoint_every == 0 or last):
            history.seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            _checkpoint(model, opt, history, it + 1, out, ema, checkpoint_before_rename)
            if on_checkpoint is not None:
                with _served(model, ema) as served:
                    on_checkpoint(served, history)
    if distributed:
        torch.distributed.barrier()
    if ema is not None:
        _assign(model, ema.shadow)
    model.requires_grad_(False)
    return model, history


def _optimizer_step(model: KirchhoffNet, opt: torch.optim.Optimizer, loss: torch.Tensor, cfg: TrainConfig,
                    world: int, ema: WeightAverage | None) -> float:
    """Backpropagate ``loss``, average gradients (and the loss) over ``world`` ranks, clip and
    step, then update the moving average; a non-finite loss or gradient skips the step.
    Returns the (rank-averaged) loss value, nats."""
    opt.zero_grad(set_to_none=False)
    if torch.isfinite(loss):
        loss.backward()
    if world > 1:
        for p in model.parameters():
            torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.SUM)
            p.grad /= world
        torch.distributed.all_reduce(loss_t := loss.detach().clone(), op=torch.distributed.ReduceOp.SUM)
        loss_value = float(loss_t) / world
    else:
        loss_value = float(loss.detach())
    if math.isfinite(loss_value) and all(torch.isfinite(p.grad).all() for p in model.parameters()):
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        model.make_realisable()  # projected gradient: a cell's limits hold after every step
        if ema is not None:
            ema.update(model)
    return loss_value


def _resume(out: Path, model: KirchhoffNet, opt: torch.optim.Optimizer
            ) -> tuple[TrainHistory, int, dict[str, torch.Tensor] | None]:
    """Load ``out/train_state.pt`` into ``model`` and ``opt`` (and torch's global generator);
    (history, first iteration to run, the weights' moving average if the run keeps one).
    Temporary files of a write that a killed run left
    behind are deleted first (no rank writes before the first iteration, so it is safe)."""
    remove_stale_temp_files(out)
    state_path = out / TRAIN_STATE_FILE
    if not state_path.is_file():
        return TrainHistory(), 0, None
    state = torch.load(state_path, weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if "torch_rng_state" in state:  # absent in checkpoints written before it was saved
        torch.set_rng_state(state["torch_rng_state"])
    return TrainHistory(list(state["loss"]), float(state["seconds"])), int(state["iteration"]), state.get("ema")


def _checkpoint(model: KirchhoffNet, opt: torch.optim.Optimizer, history: TrainHistory,
                iteration: int, out: Path, ema: WeightAverage | None = None,
                before_rename: BeforeRename | None = None) -> None:
    """Weights first, train_state.pt last: the train state is the commit record a resume reads,
    so a crash anywhere in between resumes from the previous complete checkpoint. The data
    random stream is derived from (seed, iteration, rank), so the iteration is its state;
    torch's global generator (anything drawing from it) is saved with the optimiser. With a
    moving average, the weights file holds the average (the model a run serves) and the train
    state both the raw weights and the average."""
    import io
    with _served(model, ema) as served:
        save_model(served, out, before_rename)
    buf = io.BytesIO()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "iteration": iteration,
             "loss": torch.tensor(history.loss, dtype=torch.float64), "seconds": history.seconds,
             "torch_rng_state": torch.get_rng_state()}
    if ema is not None:
        state["ema"] = ema.shadow
    torch.save(state, buf)
    atomic_write(out / TRAIN_STATE_FILE, buf.getvalue(), before_rename)


def _progress(it_range: range, cfg: TrainConfig, enabled: bool, start: int):
    if not enabled:
        return it_range
    from tqdm import tqdm
    return tqdm(it_range, total=cfg.iterations, initial=start, desc=f"train {cfg.name}", unit="it",
                dynamic_ncols=True)
