"""Running ngspice in batch mode on a :class:`~export.spice_ir.Deck` and reading the result.

One subprocess per deck (``ngspice -b -r out.raw deck.cir``) in a temporary directory,
bounded by a timeout: isolation for free (libngspice keeps global state) and a hung solve
can always be killed. Results come from the *binary* raw file (float64, full precision;
``.meas`` output has only 7 digits and is disabled by ngspice when ``-r`` is given). The
deck ``.save``s only the read-out nodes, so the raw file stays small.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .process import ToolTimeout, run_in_group
from .spice_ir import Deck

NGSPICE = "ngspice"
DECK_FILE, RAW_FILE, LOG_FILE = "deck.cir", "out.raw", "ngspice.log"


class SpiceError(RuntimeError):
    """ngspice is missing, failed, timed out or wrote an unreadable result."""


@dataclass(frozen=True)
class SpiceRun:
    """Outcome of one ngspice run.

    ``values``: read-out label → node voltage (volts) at the end time; ``end_time_s``: the
    last simulated time point (seconds); ``points``: accepted time points; ``wall_s``:
    wall time of the ngspice process; ``cpu_s``: its CPU time (user + system), the figure
    that does not depend on what else the machine is running.
    """

    values: dict[str, float]
    end_time_s: float
    points: int
    wall_s: float
    cpu_s: float


def ngspice_path() -> str | None:
    """The ngspice executable on PATH, or None."""
    return shutil.which(NGSPICE)


def parse_raw(data: bytes) -> tuple[list[str], np.ndarray]:
    """An ngspice raw file (binary or ASCII) → (variable names, ``(points, vars)``), complex
    for an AC or noise analysis written with ``Flags: complex`` (binary only), float64 else.

    With ``.options interp`` ngspice 39 repeats the header block; only the last block counts.
    """
    marker_b, marker_a = b"Binary:\n", b"Values:\n"
    pos_b, pos_a = data.rfind(marker_b), data.rfind(marker_a)
    if pos_b < 0 and pos_a < 0:
        raise SpiceError("raw file has no data section")
    binary = pos_b > pos_a
    pos = pos_b if binary else pos_a
    header = data[:pos].decode("ascii", "replace")
    header = header[header.rfind("Title:"):] if "Title:" in header else header
    n_vars = n_points = None
    names: list[str] = []
    lines = header.splitlines()
    try:
        for i, line in enumerate(lines):
            if line.startswith("No. Variables:"):
                n_vars = int(line.split(":")[1])
            elif line.startswith("No. Points:"):
                n_points = int(line.split(":")[1])
            elif line.startswith("Variables:"):
                names = [row.split()[1] for row in lines[i + 1:i + 1 + (n_vars or 0)]]
    except (ValueError, IndexError):
        raise SpiceError("raw file header is malformed") from None
    if not n_vars or n_points is None or len(names) != n_vars:
        raise SpiceError("raw file header is incomplete")
    body = data[pos + len(marker_b if binary else marker_a):]
    complex_values = any(line.startswith("Flags:") and "complex" in line for line in lines)
    if complex_values and not binary:
        raise SpiceError("complex ASCII raw files are not supported (write them with filetype=binary)")
    if binary:
        width = 16 if complex_values else 8  # float64 (real, imaginary) per variable per point
        expected_bytes = n_vars * n_points * width
        if len(body) < expected_bytes:
            raise SpiceError(f"raw file is truncated: {len(body)} data bytes, expected {expected_bytes} "
                             f"({n_points} points of {n_vars} values)")
        values = np.frombuffer(body, dtype="<c16" if complex_values else "<f8", count=n_vars * n_points)
    else:
        tokens = body.split()
        # each point: index, then one value per variable
        try:
            values = np.array([float(t) for k, t in enumerate(tokens) if k % (n_vars + 1) != 0])
        except ValueError:
            raise SpiceError("raw file holds a malformed value (truncated?)") from None
    if values.size != n_vars * n_points:
        raise SpiceError(f"raw file holds {values.size} values, expected {n_vars * n_points}")
    return names, values.reshape(n_points, n_vars)


def _run(exe: str, work: Path, timeout_s: float) -> tuple[int, float]:
    """Run ngspice in ``work`` (log to ngspice.log), bounded and in its own process group
    (:func:`export.process.run_in_group`); (exit code, CPU seconds of that child)."""
    try:
        return run_in_group([exe, "-b", "-r", RAW_FILE, DECK_FILE], work, LOG_FILE, timeout_s)
    except ToolTimeout:
        raise SpiceError(f"ngspice did not finish within {timeout_s:g} s on {DECK_FILE}; "
                         "its process group was killed") from None


def reached_end(table: np.ndarray, deck: Deck, error: type[Exception], tool: str) -> float:
    """The last time point of a simulator's ``table (points, 1 + signals)`` (seconds), which
    must be the deck's end time; ``error`` naming ``tool`` when there is none or it stopped
    early."""
    if not len(table):
        raise error(f"{tool} wrote no time points")
    end = float(table[-1, 0])
    if not np.isclose(end, deck.stop_time_s, rtol=1e-9, atol=0):
        raise error(f"{tool} stopped at {end:g} s before the end time {deck.stop_time_s:g} s")
    return end


def run_deck(deck: Deck, timeout_s: float = 600.0, keep_dir: Path | None = None) -> SpiceRun:
    """Simulate ``deck`` with ngspice and return the read-outs at its end time.

    Raises:
        SpiceError: ngspice not installed, non-zero exit, timeout (its process group is
            killed), or a result that is unreadable or does not reach the end time. The
            message names ngspice, the file at fault and the deck's title.
    """
    exe = ngspice_path()
    if exe is None:
        raise SpiceError(f"ngspice is not installed: no {NGSPICE!r} executable on PATH "
                         "(Debian/Ubuntu: apt-get install ngspice)")
    where = f"deck {deck.title!r}"
    with tempfile.TemporaryDirectory(prefix="knet-spice-") as tmp:
        work = Path(tmp)
        (work / DECK_FILE).write_text(deck.render())
        started = time.perf_counter()
        try:
            returncode, cpu = _run(exe, work, timeout_s)
        except SpiceError as err:
            raise SpiceError(f"{err} ({where})") from None
        wall = time.perf_counter() - started
        log_text = (work / LOG_FILE).read_text(errors="replace")
        if keep_dir is not None:
            keep_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(work / DECK_FILE, keep_dir / DECK_FILE)
            (keep_dir / LOG_FILE).write_text(log_text)
        raw = work / RAW_FILE
        log = log_text.strip().splitlines()
        if returncode != 0 or not raw.is_file():
            tail = " | ".join(line for line in log if "rror" in line or "arning" in line)[-600:] or " | ".join(log[-5:])
            what = f"exit {returncode}" if returncode != 0 else f"exit 0 but no {RAW_FILE}"
            raise SpiceError(f"ngspice failed on {DECK_FILE} ({what}; {where}): {tail}")
        try:
            names, table = parse_raw(raw.read_bytes())
        except SpiceError as err:
            raise SpiceError(f"ngspice wrote an unreadable {RAW_FILE} ({where}): {err}") from None
    end = reached_end(table, deck, SpiceError, f"ngspice ({RAW_FILE}, {where})")
    column = {n.lower(): i for i, n in enumerate(names)}
    values = {}
    for r in deck.readouts:
        key = f"v({r.node})".lower()
        if key not in column:
            raise SpiceError(f"ngspice result lacks {key}")
        values[r.label] = float(table[-1, column[key]])
    return SpiceRun(values, end, len(table), wall, cpu)
