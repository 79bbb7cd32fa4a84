"""Training: the loss goes down, resume continues exactly, density matching works, and
bad configs fail with a clear message. Tiny circuits, a few dozen iterations each."""
from __future__ import annotations

import pytest
import torch

from knet.cmd_core import load_train_config
from models.checkpoint import TRAIN_STATE_FILE, load_model
from models.config import SolverConfig, TrainConfig
from models.data import get_task
from models.evaluate import evaluate
from models.train import build_model, train

EVAL_SOLVER = SolverConfig(method="rk4", steps_per_layer=8)


def tiny_config(**overrides) -> TrainConfig:
    base = dict(
        name="tiny", task="8gaussians",  # numpy-only data: no sklearn import
        architecture=dict(layers=2, end_time=1.0, topology=dict(kind="full", repeat=3)),
        train_solver=dict(method="rk4", steps_per_layer=4),
        serve_solver=dict(method="rk4", steps_per_layer=8),
        iterations=60, batch_size=128, lr=2e-2, lr_final=1e-3, checkpoint_every=1000,
        eval_samples=256,
    )
    base.update(overrides)
    return TrainConfig(**base)


def test_training_lowers_the_test_nll(tmp_path):
    cfg = tiny_config()
    task = get_task(cfg.task)
    before = evaluate(build_model(cfg), task, n=1024, solver=EVAL_SOLVER)["nll"]
    model, history = train(cfg, tmp_path, progress=False)
    after = evaluate(model, task, n=1024, solver=EVAL_SOLVER)
    assert len(history.loss) == cfg.iterations
    assert after["status"] == "success"
    assert after["nll"] < before - 0.3, (before, after["nll"])
    # the written checkpoint is the trained model
    saved = load_model(tmp_path, torch.float64)
    for p, q in zip(model.parameters(), saved.parameters()):
        torch.testing.assert_close(p.double(), q, rtol=0, atol=1e-7)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_resume_gives_the_same_continuation(tmp_path, ema_decay):
    cfg = tiny_config(iterations=12, checkpoint_every=6, ema_decay=ema_decay)
    straight, hist_straight = train(cfg, tmp_path / "straight", progress=False)

    def stop_at_first_checkpoint(model, history):
        raise Interrupt  # simulate a run killed right after its checkpoint at iteration 6

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "resumed", progress=False, on_checkpoint=stop_at_first_checkpoint)
    assert (tmp_path / "resumed" / TRAIN_STATE_FILE).is_file()
    resumed, hist_resumed = train(cfg, tmp_path / "resumed", progress=False)
    assert hist_resumed.loss == hist_straight.loss
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    # and not a no-op: the parameters moved away from the initialisation
    init = build_model(cfg)
    assert not all(torch.equal(p, q) for p, q in zip(init.parameters(), resumed.parameters()))


def test_moving_average_is_what_a_run_saves_and_returns(tmp_path):
    """The average of the raw weights, recomputed here from a run without averaging (same
    seed, so the same raw trajectory), is the returned and saved model."""
    raw_cfg = tiny_config(iterations=8, checkpoint_every=1)
    trajectory: list[list[torch.Tensor]] = []
    initial = [p.detach().clone() for p in build_model(raw_cfg).parameters()]
    train(raw_cfg, tmp_path / "raw", progress=False,
          on_checkpoint=lambda m, h: trajectory.append([p.detach().clone() for p in m.parameters()]))
    decay = 0.7
    expected = initial
    for weights in trajectory:
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights)]
    model, _ = train(tiny_config(iterations=8, checkpoint_every=4, ema_decay=decay), tmp_path / "ema",
                     progress=False)
    saved = load_model(tmp_path / "ema")
    for e, p, q, last in zip(expected, model.parameters(), saved.parameters(), trajectory[-1]):
        torch.testing.assert_close(p, e, rtol=0, atol=1e-6)
        assert torch.equal(p, q)
        assert not torch.allclose(p, last)  # the average, not the last raw weights


def test_density_matching_lowers_the_reverse_kl(tmp_path):
    cfg = tiny_config(name="tinypot", task="potential2", objective="density_matching", iterations=50)
    task = get_task(cfg.task)
    before = evaluate(build_model(cfg), task, n=1024, solver=EVAL_SOLVER)
    model, _ = train(cfg, tmp_path, progress=False)
    after = evaluate(model, task, n=1024, solver=EVAL_SOLVER)
    assert after["status"] == "success"
    assert after["elbo"] < before["elbo"] - 0.3, (before["elbo"], after["elbo"])
    # E[log q + U] ≥ −log Z for any q: the importance-sampled log Z sits above −elbo
    assert after["log_z"] >= -after["elbo"] - 1e-6


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\ntask: nope\n", "task: unknown task 'nope'"),
    ("name: x\ntask: twomoon\nobjective: density_matching\n", "its objective must be 'likelihood'"),
    ("name: x\ntask: potential1\n", "its objective must be 'density_matching'"),
    ("name: x\ntask: twomoon\narchitecture: {nodes: 3}\n", "training needs nodes equal to the data dimension"),
    ("name: x\ntask: digits\narchitecture: {topology: {kind: mixed, grid: [1, 8, 7]}}\n", "holds 56 nodes"),
    ("name: x\ntask: twomoon\nlr: 0.001\nlr_final: 0.01\n", "must not exceed lr"),
    ("name: x\ntask: twomoon\nbatch_size: 0\n", "batch_size: Input should be greater than or equal to 1"),
    ("name: x\ntask: twomoon\nlearning_rate: 0.1\n", "learning_rate: Extra inputs are not permitted"),
    ("name: x\ntask: twomoon\ntrain_solver: {method: rk5}\n", "train_solver.method"),
    ("- just\n- a list\n", "expected a mapping"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_config_errors_are_clear(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        load_train_config(str(path))
    assert message in str(info.value)
    assert str(info.value).startswith(str(path))


def test_shipped_configs_are_valid():
    from pathlib import Path

    from models.zoo import ZOO_NAMES
    root = Path(__file__).resolve().parent.parent / "configs"
    for name in ZOO_NAMES:
        cfg = load_train_config(str(root / f"{name}.yaml"))
        # a hardware-aware model (NAME-hw) is its plain model fine-tuned on emulated chips
        assert cfg.name == name and cfg.task == name.removesuffix("-hw")
        assert (cfg.hardware_aware is not None) == name.endswith("-hw")
        assert cfg.init_from == (cfg.task if name.endswith("-hw") else None)
        assert 2 <= cfg.architecture.layers <= 16
