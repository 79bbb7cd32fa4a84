"""PDK and cell subcommands: ``knet pdk list`` shows the open PDKs installed here, their
corners, simulator and licence terms (docs/silicon.md)."""
from __future__ import annotations

import argparse
from dataclasses import asdict

from .common import add_model_arg, load, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pdk", help="open PDKs: `knet pdk list` shows what is installed, corners and licences")
    pdk_sub = p.add_subparsers(dest="pdk_command", required=True)
    q = pdk_sub.add_parser("list", help="the supported PDKs, whether installed, their corners and licence terms")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.set_defaults(func=cmd_pdk_list)
    register_cells(sub)


def cmd_pdk_list(args: argparse.Namespace) -> int:
    from silicon.pdk import PDKS, pdk_status
    rows = pdk_status()
    if args.json:
        print_json({"pdks": [asdict(r) for r in rows]})
        return 0
    for r in rows:
        state = f"installed {r.installed}" if r.path else f"not installed (`{PDKS[r.name].pip_line}`)"
        print(f"{r.name:<12} {r.title}")
        print(f"{'':<12} {state}; simulator {r.simulator}; corners {', '.join(r.corners)}")
        if r.path:
            print(f"{'':<12} models: {r.path}")
        print(f"{'':<12} licence: {r.licence}")
        if r.note:
            print(f"{'':<12} note: {r.note}")
    return 0


def register_cells(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cells", help="transistor cells: characterize them in SPICE (docs/silicon.md)")
    cells = p.add_subparsers(dest="cells_command", required=True)
    q = cells.add_parser("characterize", help="sweep the cell in ngspice, fit its law, write a datasheet")
    q.add_argument("--pdk", default="sky130", help="PDK (knet pdk list); default sky130")
    q.add_argument("--corner", help="process corner (default: the PDK's nominal)")
    q.add_argument("--temp", type=float, default=27.0, help="temperature, °C (default 27)")
    q.add_argument("--model", default="twomoon", help="zoo model whose operating range the fit is judged over")
    q.add_argument("--points", type=int, default=8192, help="test points for the operating range (default 8192)")
    q.add_argument("--out", help="folder for datasheet.json, law.json, tables.npz, datasheet.png "
                                 "(default silicon/datasheets/PDK-CORNER-TEMPC)")
    q.add_argument("--json", action="store_true", help="print the datasheet as JSON")
    q.set_defaults(func=cmd_cells_characterize)
    q = cells.add_parser("corners", help="a cell-realised model at every corner and temperature: NLL without "
                                         "and with a PTAT trim (characterizations must exist)")
    add_model_arg(q)
    q.add_argument("--corners", help="comma-separated corners (default: all of the PDK's)")
    q.add_argument("--temps", default="-40,27,85", help="comma-separated temperatures, °C (default -40,27,85)")
    q.add_argument("-n", type=int, default=8192, help="test points per NLL (default 8192)")
    q.add_argument("--out", help="also write the rows as JSON to this file")
    q.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    q.set_defaults(func=cmd_cells_corners)


def cmd_cells_characterize(args: argparse.Namespace) -> int:
    from pathlib import Path

    from models.checkpoint import load_model
    from models.errors import UserInputError
    from models.zoo import resolve, task_name
    from silicon.benches import Conditions
    from silicon.cell import DESIGNS
    from silicon.datasheet import STEPS, characterize, write
    from silicon.operating import operating_range
    from silicon.pdk import require_pdk

    pdk = require_pdk(args.pdk)
    if args.pdk not in DESIGNS:
        raise UserInputError(f"no cell is designed for PDK {args.pdk!r} yet; cells exist for {', '.join(DESIGNS)}")
    corner = pdk.check_corner(args.corner or pdk.corners[0])
    if args.points < 1:
        raise UserInputError("--points must be >= 1")
    cond = Conditions(pdk, DESIGNS[args.pdk], corner, args.temp)
    directory = resolve(args.model)
    _log(f"operating range of {args.model} over {args.points} test points …")
    rng = operating_range(load_model(directory), task_name(directory, args.model), args.points)
    steps = iter(range(1, len(STEPS) + 1))
    sheet, dc = characterize(cond, (rng.z_p001, rng.z_p999),
                             progress=lambda s: _log(f"[{next(steps)}/{len(STEPS)}] {s} ({cond.label})"))
    out = Path(args.out or f"silicon/datasheets/{args.pdk}-{corner}-{args.temp:g}C")
    paths = write(sheet, dc, out)
    if args.json:
        print_json(sheet.to_json())
    else:
        law = sheet.law
        print(f"{cond.label}: k = {law.slope_per_v:.3f} /V, law error {law.rms_pct:.2f} % rms / {law.max_pct:.2f} % "
              f"max over z ∈ [{rng.z_p001:.2f}, {rng.z_p999:.2f}] ({args.model}); gain limit {sheet.gain_limit:.3f}; "
              f"SPICE CPU {sheet.spice_cpu_s:.0f} s")
        for p in paths:
            print(f"wrote {p}")
    return 0


def _log(text: str) -> None:
    import sys
    print(text, file=sys.stderr, flush=True)


def add_pdk_args(p: argparse.ArgumentParser, write: bool = False) -> None:
    """``--pdk --corner --temp``: realise the model in transistor cells (docs/silicon.md)."""
    g = p.add_argument_group("transistor level (a model trained for a characterized cell, e.g. twomoon-sky130)")
    g.add_argument("--pdk", help="realise the model in this PDK's cells (knet pdk list)")
    g.add_argument("--corner", help="process corner to simulate (default: the PDK's nominal)")
    g.add_argument("--temp", type=float, default=27.0, help="temperature to simulate, °C (default 27)")
    if write:
        g.add_argument("--write", action="store_true",
                       help="store the measured figures (transistor.json) and the deck (transistor.cir) beside the "
                            "model's checkpoint: the bundle, GET /models/{name} and the model page show them")


def _realisation(args: argparse.Namespace, model):
    """(PDK, design, the model's own characterization, the one at --corner/--temp)."""
    from models.errors import UserInputError
    from silicon.cell import DESIGNS
    from silicon.pdk import require_pdk
    from silicon.store import for_model, load

    pdk = require_pdk(args.pdk)
    own = for_model(model)
    if own.sheet.pdk != pdk.name:
        raise UserInputError(f"model {model.spec.name!r} was trained for the {own.sheet.pdk} cell, not {pdk.name}")
    corner = pdk.check_corner(args.corner or pdk.corners[0])
    here = own if (corner, args.temp) == (own.sheet.corner, own.sheet.temp_c) else load(pdk.name, corner, args.temp)
    return pdk, DESIGNS[pdk.name], own, here, corner


def export_transistor_netlist(args: argparse.Namespace, model) -> int:
    """``knet export netlist MODEL --pdk P``: the transistor-level sample deck (inputs as .param)."""
    from pathlib import Path

    from silicon.deck import build_deck

    pdk, design, own, _, corner = _realisation(args, model)
    deck = build_deck(model, pdk, design, own.sheet.calibration(), None, corner, args.temp)
    out = Path(args.out)
    name = f"{model.spec.name}-transistor-{pdk.name}-{corner}-{args.temp:g}C.cir"
    path = out / name if out.is_dir() or args.out.endswith(("/", "\\")) else out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(deck.text)
    print_json({"model": model.spec.name, "pdk": pdk.name, "corner": corner, "temp_c": args.temp,
                "files": [{"path": str(path), "bytes": len(deck.text.encode())}], "transistors": deck.transistors,
                "devices": len(deck.devices), "problems": list(deck.problems),
                "schedule": {"start_s": deck.schedule.start_s, "end_s": deck.schedule.end_s,
                             "read_s": deck.schedule.read_s}})
    return 0


def simulate_transistor(args: argparse.Namespace, model) -> int:
    """``knet simulate MODEL --pdk P -n N``: ngspice at transistor level against the references."""
    import sys

    from tqdm import tqdm

    from silicon.simulate import simulate

    pdk, design, own, here, corner = _realisation(args, model)
    with tqdm(total=args.n, desc=f"{pdk.name} {corner} {args.temp:g}C", unit="sample", file=sys.stderr,
              disable=not sys.stderr.isatty()) as bar:
        report = simulate(model, pdk, design, own.sheet.calibration(), here.tables,
                          here.sheet.output["capacitance_f"]["active"], n=args.n, seed=args.seed, corner=corner,
                          temp_c=args.temp, timeout_s=args.timeout, progress=lambda i, s: bar.update(1))
    if args.json:
        print_json(report.to_json())
    else:
        print(transistor_table(report))
    if args.write:
        _write_figures(args, model, report, pdk, design, own, corner)
    return 0 if not report.summary()["failed"] else 1


def _write_figures(args, model, report, pdk, design, own, corner) -> None:
    import sys

    from models.errors import UserInputError
    from models.zoo import resolve
    from silicon.deck import build_deck
    from silicon.figures import figures, write

    if report.summary()["finished"] == 0:
        raise UserInputError("no sample finished: nothing to --write")
    deck = build_deck(model, pdk, design, own.sheet.calibration(), None, corner, args.temp)
    for path in write(resolve(args.model), figures(report, model, deck, own.sheet, design), deck.text):
        print(f"wrote {path}", file=sys.stderr)


def transistor_table(report) -> str:
    s = report.summary()
    lines = [f"{report.model} at transistor level: {report.pdk} {report.corner}, {report.temp_c:g} °C, "
             f"{report.transistors} transistors for {report.devices} devices",
             f"{'reference':<16} {'median |Δx|':>12} {'max |Δx|':>10}   (model volts, max over coordinates)"]
    for ref in ("tabulated", "characterized", "ideal"):
        e = s.get(f"error_vs_{ref}")
        if e:
            lines.append(f"{ref:<16} {e['median']:>12.4f} {e['max']:>10.4f}")
    if "energy_per_sample_j" in s:
        lines += [f"energy per forward pass: {s['energy_per_sample_j'] * 1e9:.3f} nJ "
                  f"(evolution {s['evolution_energy_j'] * 1e9:.3f} nJ)",
                  f"latency (load + evolution + read): {report.schedule['read_s'] * 1e6:.3f} µs",
                  f"ngspice: {s['spice_cpu_s_per_sample']:.1f} s CPU and {s['time_points']:.0f} time points per sample"]
    for f in s["failed"]:
        lines.append(f"FAILED z={f['z']}: {f['error']}")
    if report.problems:
        lines.append(f"{len(report.problems)} device limits exceeded (first: {report.problems[0]})")
    return "\n".join(lines)


def cmd_cells_corners(args: argparse.Namespace) -> int:
    import json
    import sys
    from dataclasses import asdict
    from pathlib import Path

    from models.errors import UserInputError
    from models.zoo import resolve, task_name
    from silicon.corners import corner_row
    from silicon.pdk import require_pdk
    from silicon.store import for_model
    from silicon.store import load as load_sheet

    model = load(args)
    own = for_model(model)
    pdk = require_pdk(own.sheet.pdk)
    corners = [c.strip() for c in (args.corners or ",".join(pdk.corners)).split(",") if c.strip()]
    try:
        temps = [float(t) for t in args.temps.split(",") if t.strip()]
    except ValueError:
        raise UserInputError(f"--temps: expected comma-separated numbers, got {args.temps!r}") from None
    if args.n < 1:
        raise UserInputError("-n must be >= 1")
    sheets = [load_sheet(pdk.name, pdk.check_corner(c), t) for c in corners for t in temps]  # all present first
    task = task_name(resolve(args.model), model.spec.name)
    rows = []
    for k, here in enumerate(sheets, 1):
        print(f"[{k}/{len(sheets)}] {here.sheet.corner}, {here.sheet.temp_c:g} °C", file=sys.stderr, flush=True)
        rows.append(corner_row(model, task, own.sheet, here.sheet, args.n))
    doc = {"model": model.spec.name, "pdk": pdk.name, "trained_at": [own.sheet.corner, own.sheet.temp_c],
           "n": args.n, "rows": [asdict(r) for r in rows]}
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    if args.json:
        print_json(doc)
    else:
        print(corners_table(doc))
    return 0


def corners_table(doc: dict) -> str:
    """The corner table of docs/silicon.md from ``knet cells corners`` rows."""
    lines = ["| corner | °C | gain ratio ρ | NLL, no trim | NLL, PTAT trim | trajectories outside the node range |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in doc["rows"]:
        lines.append(f"| {r['corner']} | {r['temp_c']:g} | {r['gain_ratio']:.3f} | {r['nll']:.3f} ± {r['nll_se']:.3f} "
                     f"| {r['nll_trimmed']:.3f} ± {r['nll_trimmed_se']:.3f} | {100 * r['outside_node_range']:.1f} % |")
    return "\n".join(lines)
