"""Zoo subcommands: ``knet zoo`` lists the shipped models with their evaluation figures;
``knet zoo-figure`` draws one picture of every model (the README's zoo image)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from models.errors import UserInputError
from models.zoo import PUBLISHED_NATS as PUBLISHED

from .common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zoo", help="list the shipped zoo models and their evaluation; prints JSON")
    p.add_argument("--markdown", action="store_true", help="print the zoo table (docs/zoo.md) instead")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("zoo-figure", help="draw a composite picture of the zoo (PNG)")
    p.add_argument("--out", default="docs/zoo_samples.png", help="PNG file to write")
    p.add_argument("--models", nargs="+", help="zoo names or checkpoint directories (default: the whole zoo)")
    p.set_defaults(func=cmd_zoo_figure)


def _eval_of(directory: Path) -> dict:
    from models.checkpoint import EVAL_FILE
    path = directory / EVAL_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def cmd_zoo(args: argparse.Namespace) -> int:
    from models.checkpoint import load_model
    from models.zoo import available, resolve
    rows = []
    for name in available():
        d = resolve(name)
        model, ev = load_model(d), _eval_of(d)
        rows.append({"name": name, "task": ev.get("task", name), "device": model.spec.device,
                     "layers": len(model.spec.layers), "edges": model.spec.num_edges,
                     "parameters": sum(p.numel() for p in model.parameters()),
                     **{k: ev[k] for k in ("nll", "nll_se", "elbo", "elbo_se", "log_z", "train_seconds",
                                            "iterations") if k in ev}})
    if args.markdown:
        print(markdown_table(rows))
    else:
        print_json({"models": rows})
    return 0


def markdown_table(rows: list[dict]) -> str:
    """The zoo table of docs/zoo.md from ``knet zoo`` rows."""
    lines = ["| model | task | device | layers | devices (edges) | parameters | ours ± s.e. (nats) "
             "| published | training time |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "nll" in r:
            task, ours = "generation (NLL)", f"{r['nll']:.3f} ± {r['nll_se']:.3f}"
        elif "elbo" in r:
            task, ours = "density matching (E[log q + U])", f"{r['elbo']:.3f} ± {r['elbo_se']:.3f}"
        else:
            task, ours = r["task"], "not evaluated"
        pub = f"{PUBLISHED[r['name']]:.3f}" if r["name"] in PUBLISHED else "—"
        minutes = f"{r['train_seconds'] / 60:.1f} min" if r.get("train_seconds") else "—"
        lines.append(f"| {r['name']} | {task} | {r['device']} | {r['layers']} | {r['edges']} | "
                     f"{r['parameters']} | {ours} | {pub} | {minutes} |")
    return "\n".join(lines)


def cmd_zoo_figure(args: argparse.Namespace) -> int:
    from models.checkpoint import load_model
    from models.data import get_task
    from models.zoo import available, resolve, task_name

    from .plots import zoo_figure
    names = args.models or available()
    if not names:
        raise UserInputError("no zoo models found; train them first (see docs/zoo.md)")
    entries = []
    for name in names:
        d = resolve(name)
        model = load_model(d)
        entries.append((model, get_task(task_name(d, model.spec.name)), _eval_of(d)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    zoo_figure(entries, out)
    print_json({"out": str(out), "models": [m.spec.name for m, _, _ in entries]})
    return 0
