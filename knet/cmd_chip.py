"""What a real chip would produce: ``knet robustness`` and ``knet design-space``."""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from models.errors import UserInputError

from .common import add_model_arg, load, print_json


def register(sub: argparse._SubParsersAction) -> None:
    from models.robustness import DEFAULT_LEVELS, EFFECTS
    p = sub.add_parser("robustness", help="Monte Carlo over chip instances: quality vs mismatch, bits, noise, …")
    add_model_arg(p)
    p.add_argument("--effects", default=",".join(EFFECTS),
                   help=f"comma-separated subset of {','.join(EFFECTS)} (default: all)")
    p.add_argument("--levels", action="append", default=[], metavar="EFFECT=V1,V2,…",
                   help="levels of one effect, e.g. mismatch=0,0.01,0.05 (repeatable); defaults: "
                        + "; ".join(f"{k}={','.join(f'{v:g}' for v in vs)}" for k, vs in DEFAULT_LEVELS.items()))
    p.add_argument("--instances", type=int, default=32, help="chip instances per mismatch level")
    p.add_argument("--eval-points", type=int, default=8192, help="fresh test points for the NLL")
    p.add_argument("--sample-points", type=int, default=2048, help="samples for the energy distance")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap draws for the distance CI")
    p.add_argument("--max-seconds", type=float, default=1800.0, help="wall-clock bound of the whole run")
    p.add_argument("--no-solver-check", action="store_true",
                   help="skip checking perturbed chips against a tight reference solve")
    p.add_argument("--out", help="directory for robustness.{json,csv,png} (default: the checkpoint directory)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_robustness)

    p = sub.add_parser("design-space", help="sweep C, I0, V0: latency, energy, noise, switching, quality")
    add_model_arg(p)
    p.add_argument("--capacitances", help="comma-separated farads (default: 7 points, 10 fF … 10 pF)")
    p.add_argument("--currents", help="comma-separated amperes (default: 5 points, 100 nA … 1 mA)")
    p.add_argument("--voltages", help="comma-separated volts (default: 3 points, 0.1 V … 1 V)")
    p.add_argument("--switching-s", type=float, default=2e-11, help="layer-switch transition time, seconds")
    p.add_argument("--samples", type=int, default=2048, help="samples per design point")
    p.add_argument("--out", help="directory for design_space.{json,csv,png} (default: the checkpoint directory)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_design_space)


def _levels(args: argparse.Namespace) -> dict[str, list[float]]:
    from models.robustness import DEFAULT_LEVELS, EFFECTS
    effects = [e.strip() for e in args.effects.split(",") if e.strip()]
    unknown = [e for e in effects if e not in EFFECTS]
    if unknown or not effects:
        raise UserInputError(f"--effects: unknown effect {', '.join(unknown) or '(none)'}; "
                             f"expected {', '.join(EFFECTS)}")
    levels = {e: list(DEFAULT_LEVELS[e]) for e in effects}
    for item in args.levels:
        name, _, values = item.partition("=")
        if name not in levels:
            raise UserInputError(f"--levels: {name!r} is not one of the selected effects ({', '.join(effects)})")
        levels[name] = _floats(values, f"--levels {name}")
    for name in ("quantization", "adc"):
        if any(v != int(v) or v < 1 for v in levels.get(name, [])):
            raise UserInputError(f"--levels {name}: bits must be positive integers")
    if any(v < 0 for vs in levels.values() for v in vs):
        raise UserInputError("--levels: levels must not be negative")
    return levels


def _floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserInputError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise UserInputError(f"{flag}: no values given")
    return values


def _out_dir(args: argparse.Namespace) -> Path:
    from models.zoo import resolve
    return Path(args.out) if args.out else resolve(args.model)


def _task(args: argparse.Namespace, model):
    from models.data import get_task
    from models.zoo import resolve, task_name
    return get_task(task_name(resolve(args.model), model.spec.name))


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    path.write_text(buf.getvalue())


def cmd_robustness(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from models.robustness import Robustness, RobustnessFailed, RobustnessSettings, solver_check

    from .plots_chip import robustness_figure
    for flag in ("instances", "eval_points", "sample_points", "bootstrap"):
        if getattr(args, flag) < 2:
            raise UserInputError(f"--{flag.replace('_', '-')} must be >= 2")
    levels = _levels(args)
    model = load(args)
    task = _task(args, model)
    settings = RobustnessSettings(args.instances, args.eval_points, args.sample_points, args.bootstrap,
                                  args.max_seconds)
    total = sum(len(v) for v in levels.values())
    try:
        with tqdm(total=total + 1, desc=f"robustness {model.spec.name}", unit="level", dynamic_ncols=True) as bar:
            bar.set_postfix_str("ideal model and data")
            run = Robustness(model, task, settings)
            bar.update()

            def step(effect: str, level: float) -> None:
                bar.set_postfix_str(f"{effect} {level:g}")

            report = run.run(levels, progress=lambda e, lv: (step(e, lv), bar.update()))
        if not args.no_solver_check and model.spec.bijective:
            report["solver_check"] = solver_check(model, task)
    except RobustnessFailed as err:
        print(f"error: {err}; nothing was written", file=sys.stderr)
        return 1
    out = _out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(report, indent=1) + "\n")
    rows = [{**r, "distance_lo": r["distance_ci"][0], "distance_hi": r["distance_ci"][1]} for r in report["rows"]]
    _write_csv(out / "robustness.csv", rows, ["effect", "level", "nll", "nll_se", "nll_worst", "distance",
                                              "distance_lo", "distance_hi", "instances"])
    robustness_figure(report, out / "robustness.png")
    if args.json:
        print_json({"model": report["model"], "rows": report["rows"]})
    else:
        print(robustness_table(report))
        print(f"wrote {out / 'robustness.json'}, robustness.csv, robustness.png ({report['seconds']:.0f} s)")
    return 0


def robustness_table(report: dict) -> str:
    """The report's rows as a Markdown table."""
    metric = "NLL" if report["metric"] == "nll" else "E[log q + U]"
    lines = [f"| effect | level | {metric} ± s.e. | worst | energy distance [95% CI] | instances |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["rows"]:
        q = "—" if r["nll"] is None else f"{r['nll']:.3f} ± {r['nll_se']:.3f}"
        worst = "—" if r["nll_worst"] is None else f"{r['nll_worst']:.3f}"
        lo, hi = r["distance_ci"]
        lines.append(f"| {r['effect']} | {r['level']:g} | {q} | {worst} | {r['distance']:.4f} [{lo:.4f}, {hi:.4f}] "
                     f"| {r['instances']} |")
    floor = report["floor"]
    draws = "data draws" if report["metric"] == "nll" else "draws of the ideal model; the task has no data"
    lines.append(f"\nFloor (two independent {draws}): {floor['distance']:.4f} "
                 f"[{floor['distance_ci'][0]:.4f}, {floor['distance_ci'][1]:.4f}].")
    return "\n".join(lines)


def cmd_design_space(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from models import design_space as ds

    from .plots_chip import design_space_figure
    if args.samples < 2:
        raise UserInputError("--samples must be >= 2")
    if args.switching_s < 0:
        raise UserInputError("--switching-s must not be negative")
    grids = {}
    for flag, default in (("capacitances", ds.DEFAULT_CAPACITANCES_F), ("currents", ds.DEFAULT_CURRENTS_A),
                          ("voltages", ds.DEFAULT_VOLTAGES_V)):
        text = getattr(args, flag)
        values = _floats(text, f"--{flag}") if text else list(default)
        if any(v <= 0 for v in values):
            raise UserInputError(f"--{flag}: values must be positive")
        grids[flag] = values
    model = load(args)
    task = _task(args, model)
    n = len(grids["capacitances"]) * len(grids["currents"]) * len(grids["voltages"])
    with tqdm(total=n, desc=f"design space {model.spec.name}", unit="point", dynamic_ncols=True) as bar:
        report = ds.design_space(model, task, grids["capacitances"], grids["currents"], grids["voltages"],
                                 args.switching_s, args.samples, progress=lambda _done, _n: bar.update())
    out = _out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    (out / "design_space.json").write_text(json.dumps(report, indent=1) + "\n")
    _write_csv(out / "design_space.csv", report["points"], list(report["points"][0]))
    design_space_figure(report, out / "design_space.png")
    if args.json:
        print_json(report)
    else:
        pts = report["points"]
        front = [p for p in pts if p["pareto"]]
        print(f"{len(pts)} design points, {sum(p['feasible'] for p in pts)} feasible, "
              f"{sum(p['keeps_quality'] for p in pts)} keep quality, {len(front)} on the Pareto front "
              "(latency, energy)")
        for p in sorted(front, key=lambda p: p["latency_s"]):
            nll = "" if p["nll"] is None else f"  NLL={p['nll']:.3f}"
            print(f"  C={p['capacitance_f']:.3g} F  I0={p['current_scale_a']:.3g} A  V0={p['voltage_scale_v']:.3g} V  "
                  f"latency={p['latency_s']:.3g} s  energy={p['energy_j']:.3g} J  noise={p['noise_rel']:.2g}·V0"
                  f"{nll}  distance={p['distance']:.4f}")
        print(f"wrote {out / 'design_space.json'}, design_space.csv, design_space.png")
    return 0
