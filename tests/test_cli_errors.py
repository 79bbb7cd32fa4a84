"""The command line tells bad input (exit 2, ``error: …``) from a bug in knet (exit 70,
``internal error: …`` with a hint), and answers ``--version``."""
from __future__ import annotations

from importlib.metadata import version

import pytest
from helpers import tiny_checkpoint
from pydantic import ValidationError

from knet import cli
from models.checkpoint import CheckpointError, load_model, save_model
from models.config import CircuitSpec, LayerSpec, SolverConfig
from models.errors import UserInputError
from models.flow import KirchhoffNet
from models.topology import fully_connected


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"knet {version('kirchhoffnet-serve')}"


@pytest.mark.parametrize("argv, message", [
    (["sample", "no-such-model-anywhere"], "neither a zoo model"),
    (["sample", "twomoon", "-n", "0"], "-n must be >= 1"),
    (["bench", "--models", "twomoon", "--batches", "0"], "batch sizes must be >= 1"),
    (["sample", "twomoon", "--steps", "0"], "steps_per_layer"),  # pydantic validation of the solver
])
def test_bad_input_is_a_one_line_user_error(argv, message, capsys):
    assert cli.main(argv) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_bad_checkpoint_is_a_user_error(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "m")
    (ckpt / "circuit.json").write_text("{not json")
    assert cli.main(["sample", str(ckpt)]) == cli.EXIT_USER_ERROR
    assert capsys.readouterr().err.startswith("error: ")


def test_log_density_of_a_non_bijective_model_is_a_user_error(tmp_path, capsys):
    layers = tuple(LayerSpec(duration=0.5, nodes=n, edges=tuple(fully_connected(n, 1, True))) for n in (2, 3))
    model = KirchhoffNet(CircuitSpec(name="wide", device="affine-tanh", data_dim=2, layers=layers), seed=0)
    save_model(model, tmp_path / "wide")
    points = tmp_path / "points.json"
    points.write_text("[[0.1, 0.2]]")
    assert cli.main(["logprob", str(tmp_path / "wide"), "--points", str(points)]) == cli.EXIT_USER_ERROR
    assert "no log-density" in capsys.readouterr().err


def test_a_bug_is_reported_as_internal_error(monkeypatch, capsys):
    # a bug cannot be provoked through real input on purpose, so one is planted where every
    # command passes (applying the runtime settings)
    def broken(*_args, **_kwargs):
        return {}["no such key"]
    monkeypatch.setattr("knet.settings.apply", broken)
    assert cli.main(["sample", "twomoon"]) == cli.EXIT_INTERNAL_ERROR != cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("internal error: KeyError") and "bug" in err and "KNET_TRACEBACK=1" in err


def test_classification_of_real_exceptions(tmp_path):
    with pytest.raises(CheckpointError) as bad_dir:
        load_model(tmp_path)  # an empty directory is no checkpoint
    with pytest.raises(ValidationError) as bad_solver:
        SolverConfig(method="rk4", steps_per_layer=0)
    assert cli.is_user_error(bad_dir.value) and isinstance(bad_dir.value, UserInputError)
    assert cli.is_user_error(bad_solver.value)
    assert cli.is_user_error(FileNotFoundError("x"))
    assert not cli.is_user_error(ValueError("a plain ValueError from deep inside is a bug"))
    assert not cli.is_user_error(TypeError("unsupported operand"))
