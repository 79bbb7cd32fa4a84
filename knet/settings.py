"""Process-wide runtime settings, read from the environment in this one place.

| variable | default | meaning |
| --- | --- | --- |
| ``KNET_THREADS`` | 1 | torch intra-op threads (2 threads make small ops ~100× slower on 2 vCPUs) |
| ``BENTOML_HOME`` | ``<repo>/.bentoml`` | BentoML model/bento store, kept inside the project |
| ``BENTOML_DO_NOT_TRACK`` | True | BentoML usage tracking off |
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from models.errors import UserInputError

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RuntimeSettings:
    threads: int = 1
    bentoml_home: Path = REPO_ROOT / ".bentoml"

    @classmethod
    def from_env(cls) -> RuntimeSettings:
        threads = os.environ.get("KNET_THREADS", "1")
        if not threads.isdigit() or int(threads) < 1:
            raise UserInputError(f"KNET_THREADS must be a positive integer, got {threads!r}")
        return cls(int(threads), Path(os.environ.get("BENTOML_HOME", str(REPO_ROOT / ".bentoml"))))


def apply(settings: RuntimeSettings | None = None) -> RuntimeSettings:
    """Apply the settings to this process (threads, BentoML environment) and return them."""
    s = settings or RuntimeSettings.from_env()
    import torch
    torch.set_num_threads(s.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(s.threads))
    os.environ["BENTOML_HOME"] = str(s.bentoml_home)
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    return s
