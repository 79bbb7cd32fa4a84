"""Shared pytest set-up: one torch thread, BentoML kept local and quiet."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["BENTOML_DO_NOT_TRACK"] = "True"
os.environ.setdefault("BENTOML_HOME", str(ROOT / ".bentoml-test"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

torch.set_num_threads(1)
