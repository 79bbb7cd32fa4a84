"""Shared pytest set-up: one torch thread, BentoML quiet and on a temporary store; the
session's one HTTP test server (``server``); a check that the user's store is left alone.

The user's store (``$BENTOML_HOME`` as scripts/setup.sh sets it, ``./.bentoml``) is what
``knet serve`` serves, so no test may write there: BENTOML_HOME is replaced here, before
anything imports bentoml, by a directory removed at the end of the session, and every
subprocess inherits it. ``_default_store_untouched`` fails the session if the user's store
changed anyway.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["BENTOML_DO_NOT_TRACK"] = "True"
# the stores a user's `knet serve` would read: the one in the environment and the project's own
USER_STORES = tuple(dict.fromkeys(Path(p).resolve() for p in
                                  (os.environ.get("BENTOML_HOME") or ROOT / ".bentoml", ROOT / ".bentoml")))
TEST_STORE = Path(tempfile.mkdtemp(prefix="knet-test-bentoml-"))
os.environ["BENTOML_HOME"] = str(TEST_STORE)

import torch  # noqa: E402

torch.set_num_threads(1)


import httpx  # noqa: E402
import pytest  # noqa: E402


def store_fingerprint(home: Path) -> dict[str, tuple[int, int]]:
    """``relative path -> (size, mtime_ns)`` of every file of the model and bento stores under
    ``home`` (empty when there is none)."""
    out = {}
    for part in ("models", "bentos"):
        for f in sorted((home / part).rglob("*")) if (home / part).is_dir() else ():
            if f.is_file() or f.is_symlink():
                st = f.lstat()
                out[str(f.relative_to(home))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="session", autouse=True)
def _default_store_untouched():
    """Fails the session (an error at the last test's teardown) if any user store changed."""
    before = {home: store_fingerprint(home) for home in USER_STORES}
    yield
    for home in USER_STORES:
        after = store_fingerprint(home)
        changed = sorted(set(before[home].items()) ^ set(after.items()))
        assert not changed, (f"the test suite changed the user's BentoML store {home} (tests must use "
                             f"their own BENTOML_HOME): {sorted({p for p, _ in changed})[:10]}")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(TEST_STORE, ignore_errors=True)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One real ``bentoml serve`` for the HTTP tests (tests/test_service_http.py,
    tests/test_service_chip.py): tiny models in a test-local BentoML store (tiny3 with a
    robustness table beside it; ``broken`` corrupted after storing; ``tiny`` stored twice, the
    older version from ``tiny-older``; ``tiered`` with accuracy tiers), lowered limits
    (helpers.SERVER_ENV). Yields ``(client, checkpoint dirs by name, log path, env)``."""
    from helpers import SERVER_ENV, run_knet, tiny_checkpoint, write_robustness

    from models.checkpoint import WEIGHTS_FILE
    from service.launch import running_server

    root = tmp_path_factory.mktemp("svc")
    home = {"BENTOML_HOME": str(root / "bentoml")}
    cks = {"tiny-older": tiny_checkpoint(root / "tiny-older", name="tiny", steps=16, seed=1),  # stored first
           "tiny": tiny_checkpoint(root / "tiny", name="tiny", steps=16),
           "tiny3": write_robustness(tiny_checkpoint(root / "tiny3", name="tiny3", nodes=3, steps=16)),
           "broken": tiny_checkpoint(root / "broken", name="broken"),
           "tiered": tiny_checkpoint(root / "tiered", name="tiered", steps=8, repeat=3, init_scale=1.0)}
    # verified accuracy tiers (models/accuracy.py) on one model: tolerance, error_bound, region
    r = run_knet("calibrate", str(cks["tiered"]), "--tiers", "1e-2", "1e-3", "--points", "64", "--write", env=home)
    assert r.returncode == 0, r.stderr
    r = run_knet("store", "--no-zoo", *map(str, cks.values()), env=home)
    assert r.returncode == 0, r.stderr
    # corrupt the stored copy: the service must log it and serve the others
    stored = next((root / "bentoml" / "models" / "broken").glob("*/" + WEIGHTS_FILE))
    stored.write_bytes(b"\x00garbage")
    log = root / "server.log"
    with running_server({**SERVER_ENV, **home}, log_path=log) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client, cks, log, home
