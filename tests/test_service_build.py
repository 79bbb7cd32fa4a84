"""Deployment: `bentoml build` offline, the top-level Dockerfile (linted, in step with the
bento's generated one), and (slow) `bentoml serve` of the built bento."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml
from helpers import tiny_checkpoint

from service.launch import running_server

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _requirement_name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower()


def test_bentofile_is_offline_and_in_step_with_pyproject():
    cfg = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {_requirement_name(r): r for r in project["dependencies"]}
    assert cfg["python"]["lock_packages"] is False
    assert "ngspice" in cfg["docker"]["system_packages"]
    for req in cfg["python"]["packages"]:
        assert deps.get(_requirement_name(req)) == req, f"bentofile {req!r} differs from pyproject.toml"


def test_dockerfile_passes_hadolint():
    r = subprocess.run([str(BIN / "hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def bento(tmp_path_factory):
    """Build the bento once, offline, in a test-local store holding one tiny model."""
    root = tmp_path_factory.mktemp("build")
    env = {**os.environ, "BENTOML_HOME": str(root / "bentoml"), "BENTOML_DO_NOT_TRACK": "True",
           "UV_OFFLINE": "1", "PIP_NO_INDEX": "1"}
    ck = tiny_checkpoint(root / "tiny", name="tiny", steps=8)
    r = subprocess.run([sys.executable, "-m", "knet", "store", "--no-zoo", str(ck)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(BIN / "bentoml"), "build", str(ROOT), "--output", "tag"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    tag = re.search(r"__tag__:(\S+)", r.stdout).group(1)
    name, version = tag.split(":")
    return tag, root / "bentoml" / "bentos" / name / version, env


def test_bentoml_build_packs_service_and_stored_models(bento):
    tag, path, _ = bento
    info = yaml.safe_load((path / "bento.yaml").read_text())
    assert info["service"] == "service.service:KirchhoffNetService"
    assert [m["tag"].split(":")[0] for s in info["services"] for m in s["models"]] == ["tiny"]
    assert (path / "src" / "service" / "service.py").is_file() and (path / "src" / "models" / "flow.py").is_file()
    assert not (path / "src" / "tests").exists()


def _dockerfile_essentials(text: str) -> dict:
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    return {"python": re.search(r"python:(\d+\.\d+)", base).group(1),
            "ngspice": bool(re.search(r"apt-get install[^\n]*\bngspice\b", text)),
            "port": "3000" in re.findall(r"^EXPOSE\s+(\d+)", text, re.M)}


def test_top_level_dockerfile_in_step_with_generated(bento):
    _, path, _ = bento
    generated = (path / "env" / "docker" / "Dockerfile").read_text()
    ours = (ROOT / "Dockerfile").read_text()
    assert _dockerfile_essentials(ours) == _dockerfile_essentials(generated)
    assert _dockerfile_essentials(ours) == {"python": "3.11", "ngspice": True, "port": True}
    # both start `bentoml serve` on port 3000
    assert "exec bentoml" in (path / "env" / "docker" / "entrypoint.sh").read_text()
    entry = re.search(r"^ENTRYPOINT\s+(.*)$", ours, re.M).group(1)
    assert '"bentoml", "serve", "service.service:KirchhoffNetService"' in entry and '"3000"' in entry


@pytest.mark.slow
def test_built_bento_serves(bento):
    tag, _, env = bento
    home = {"BENTOML_HOME": env["BENTOML_HOME"]}
    with running_server(home, target=tag) as url:
        r = httpx.post(url + "/sample", json={"model": "tiny", "n": 2, "seed": 0}, timeout=30)
        assert r.status_code == 200 and len(r.json()["samples"]) == 2
