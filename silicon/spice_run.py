"""Running a transistor-level bench in ngspice and reading the raw files its control block writes.

A bench is plain deck text whose ``.control`` block ``write``s one binary raw file per
analysis (full float64 precision); :func:`run_bench` runs it bounded in time in its own
process group (``export.process``) and returns every raw file it asked for. The numerical
reader is ``export.spice.parse_raw``: one raw-file parser for the whole project.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.process import ToolTimeout, run_in_group
from export.spice import SpiceError, ngspice_path, parse_raw

DECK, LOG = "bench.cir", "ngspice.log"


@dataclass(frozen=True)
class RawTable:
    """One analysis: its vector names (lower case) and values ``(points, vectors)``."""

    names: tuple[str, ...]
    values: np.ndarray

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.values[:, self.names.index(name.lower())]
        except ValueError:
            raise SpiceError(f"ngspice result lacks {name!r}; it has {', '.join(self.names)}") from None


@dataclass(frozen=True)
class BenchRun:
    """The raw files of one bench run, by file name, and the run's wall and CPU seconds."""

    tables: dict[str, RawTable]
    wall_s: float
    cpu_s: float
    log: str


def control_block(commands: list[str]) -> list[str]:
    """A ``.control`` block writing binary raw files; ends with ``quit 0`` (ngspice -b exits
    1 otherwise)."""
    return [".control", "set filetype=binary", "set noaskquit", *commands, "quit 0", ".endc"]


def run_bench(text: str, files: list[str], timeout_s: float = 600.0, what: str = "bench",
              keep_dir: Path | None = None) -> BenchRun:
    """Run deck ``text`` with ngspice and read the raw ``files`` its control block writes.

    Raises:
        SpiceError: ngspice missing, failing, timing out (its process group is killed) or not
            writing a file; the message names ``what`` and the log's errors.
    """
    exe = ngspice_path()
    if exe is None:
        raise SpiceError("ngspice is not installed: no 'ngspice' executable on PATH "
                         "(Debian/Ubuntu: apt-get install ngspice)")
    with tempfile.TemporaryDirectory(prefix="knet-silicon-") as tmp:
        work = Path(tmp)
        (work / DECK).write_text(text)
        started = time.perf_counter()
        try:
            code, cpu = run_in_group([exe, "-b", DECK], work, LOG, timeout_s)
        except ToolTimeout:
            raise SpiceError(f"ngspice did not finish the {what} within {timeout_s:g} s; "
                             "its process group was killed") from None
        wall = time.perf_counter() - started
        log = (work / LOG).read_text(errors="replace")
        if keep_dir is not None:
            keep_dir.mkdir(parents=True, exist_ok=True)
            (keep_dir / DECK).write_text(text)
            (keep_dir / LOG).write_text(log)
        missing = [f for f in files if not (work / f).is_file()]
        if code != 0 or missing:
            errors = " | ".join(line for line in log.splitlines() if "rror" in line or "ould not" in line)
            raise SpiceError(f"ngspice failed on the {what} (exit {code}"
                             f"{', no ' + ', '.join(missing) if missing else ''}): {errors[-800:] or log[-800:]}")
        tables = {}
        for f in files:
            names, values = parse_raw((work / f).read_bytes())
            tables[f] = RawTable(tuple(n.lower() for n in names), values)
    return BenchRun(tables, wall, cpu, log)
