"""Shared pytest set-up: one torch thread, BentoML kept local and quiet; the session's one
HTTP test server (``server``)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["BENTOML_DO_NOT_TRACK"] = "True"
os.environ.setdefault("BENTOML_HOME", str(ROOT / ".bentoml-test"))

import torch  # noqa: E402

torch.set_num_threads(1)


import httpx  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One real ``bentoml serve`` for the HTTP tests (tests/test_service_http.py,
    tests/test_service_chip.py): tiny models in a test-local BentoML store (tiny3 with a
    robustness table beside it; ``broken`` corrupted after storing), lowered limits
    (helpers.SERVER_ENV). Yields ``(client, checkpoint dirs by name, log path, env)``."""
    from helpers import SERVER_ENV, run_knet, tiny_checkpoint, write_robustness

    from models.checkpoint import WEIGHTS_FILE
    from service.launch import running_server

    root = tmp_path_factory.mktemp("svc")
    home = {"BENTOML_HOME": str(root / "bentoml")}
    cks = {"tiny": tiny_checkpoint(root / "tiny", name="tiny", steps=16),
           "tiny3": write_robustness(tiny_checkpoint(root / "tiny3", name="tiny3", nodes=3, steps=16)),
           "broken": tiny_checkpoint(root / "broken", name="broken")}
    r = run_knet("store", "--no-zoo", *map(str, cks.values()), env=home)
    assert r.returncode == 0, r.stderr
    # corrupt the stored copy: the service must log it and serve the others
    stored = next((root / "bentoml" / "models" / "broken").glob("*/" + WEIGHTS_FILE))
    stored.write_bytes(b"\x00garbage")
    log = root / "server.log"
    with running_server({**SERVER_ENV, **home}, log_path=log) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client, cks, log, home
