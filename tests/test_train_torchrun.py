"""Data-parallel training under ``torchrun`` (gloo on CPU): 2 processes, a few iterations.

Both ranks must end with identical parameters (gradients are all-reduced), and only rank 0
writes the checkpoint, which holds those parameters.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from models.checkpoint import CIRCUIT_FILE, TRAIN_STATE_FILE, WEIGHTS_FILE, load_model

ROOT = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    from models.config import TrainConfig
    from models.train import train

    out = sys.argv[1]
    cfg = TrainConfig(name="ddp", task="8gaussians",
                      architecture=dict(layers=2, topology=dict(kind="full", repeat=2)),
                      train_solver=dict(method="rk4", steps_per_layer=2),
                      iterations=4, batch_size=64, lr=5e-2, checkpoint_every=2)
    model, history = train(cfg, out, progress=False, distributed=True)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.save({"params": [p.detach().clone() for p in model.parameters()], "world": world,
                "loss": history.loss}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()
""")


def torchrun() -> str:
    exe = Path(sys.executable).parent / "torchrun"
    return str(exe) if exe.exists() else (shutil.which("torchrun") or "")


@pytest.mark.skipif(not torchrun(), reason="torchrun not installed")
def test_two_process_training_keeps_ranks_identical(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [torchrun(), "--standalone", "--nproc_per_node", "2", str(script), str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    for p, q in zip(r0["params"], r1["params"]):
        assert torch.equal(p, q)
    assert r0["loss"] == r1["loss"]  # the logged loss is the all-reduced mean
    # rank 0 wrote the checkpoint, and it holds the trained parameters
    for name in (CIRCUIT_FILE, WEIGHTS_FILE, TRAIN_STATE_FILE):
        assert (out / name).is_file()
    saved = load_model(out, torch.float32)
    for p, q in zip(r0["params"], saved.parameters()):
        assert torch.equal(p, q)
    assert torch.load(out / TRAIN_STATE_FILE, weights_only=True)["iteration"] == 4
