"""Hardware export subcommands: ``knet export {netlist,params,onnx,bundle,all}`` and
``knet simulate``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .chip_args import add_chip_args, chip_from_args
from .cmd_silicon import add_pdk_args
from .common import add_model_arg, load, print_json

EXPORT_KINDS = {
    "netlist": {"sample": ["netlist-sample"], "logprob": ["netlist-logprob"], "reverse": ["netlist-reverse"],
                "all": ["netlist-sample", "netlist-logprob", "netlist-reverse"]},
    "params": {"json": ["params-json"], "csv": ["params-csv"], "tensors": ["params-tensors"],
               "all": ["params-json", "params-csv", "params-tensors"]},
    "onnx": {"sample": ["onnx-sample"], "logprob": ["onnx-logprob"], "all": ["onnx-sample", "onnx-logprob"]},
    "verilog-a": {"all": ["verilog-a"]},
    "bundle": {"all": ["bundle"]},
}
# `knet export netlist --style`: the artifact kind prefix of each netlist style
NETLIST_STYLES = {"flat": "netlist-", "subckt": "netlist-subckt-", "vacask": "vacask-"}
CHIP_EXPORTS = ("netlist", "params")  # exports that can describe one emulated chip instance (--mismatch …)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write SPICE netlists, parameter tables, ONNX graphs or a bundle")
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    helps = {"netlist": "SPICE netlists (ngspice dialect)", "params": "parameter tables and tensors",
             "onnx": "ONNX graphs (fixed-step RK4), checked against torch", "bundle": "one zip with everything",
             "verilog-a": "Verilog-A device, divergence and DAC modules (one .va file)"}
    for name, choices in EXPORT_KINDS.items():
        q = what.add_parser(name, help=helps[name])
        add_model_arg(q)
        q.add_argument("--out", required=True,
                       help="output file (one artifact) or directory (several, or an existing directory)")
        if len(choices) > 1:
            flag = {"netlist": "--variant", "params": "--format", "onnx": "--direction"}[name]
            q.add_argument(flag, dest="choice", choices=list(choices), default="all")
        if name == "onnx":
            q.add_argument("--bench", action="store_true", help="also time onnxruntime against torch")
        if name == "netlist":
            q.add_argument("--style", choices=list(NETLIST_STYLES), default="flat",
                           help="flat: behavioural sources with inline numbers (default); subckt: every device an "
                                "instance of a .subckt per family; vacask: VACASK syntax with Verilog-A devices")
        if name in CHIP_EXPORTS:
            add_chip_args(q)
        if name == "netlist":
            add_pdk_args(q)
        q.set_defaults(func=cmd_export, choice="all")

    p = sub.add_parser("simulate", help="run the netlists in ngspice or VACASK and compare with the model")
    add_model_arg(p)
    p.add_argument("-n", type=int, default=16, help="number of inputs (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent inputs")
    p.add_argument("--variants", default="sample,logprob,reverse", help="comma-separated netlist variants")
    p.add_argument("--mode", choices=["per-input", "batch"], default="per-input",
                   help="one ngspice run per input (default, measured faster) or several copies per deck")
    p.add_argument("--chunk", type=int, default=4, help="copies per deck in batch mode")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per ngspice run")
    p.add_argument("--jobs", type=int, default=1, help="ngspice runs in parallel (default 1)")
    p.add_argument("--max-seconds", type=float, default=900.0,
                   help="refuse when the projected simulator CPU time exceeds this (default 900)")
    p.add_argument("--force", action="store_true", help="simulate even when projected to exceed --max-seconds")
    p.add_argument("--simulator", choices=["auto", "ngspice", "vacask"], default="auto",
                   help="circuit simulator: ngspice (behavioural sources), vacask (compiled Verilog-A devices) or "
                        "auto (default: ngspice unless the job is large, then the one projected faster)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_chip_args(p)
    add_pdk_args(p, write=True)
    p.set_defaults(func=cmd_simulate)


def _write(out: Path, artifacts: list, as_dir: bool) -> list[dict]:
    written = []
    if as_dir:
        out.mkdir(parents=True, exist_ok=True)
    for a in artifacts:
        path = out / a.filename if as_dir else out
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(a.data)
        written.append({"path": str(path), "bytes": len(a.data), "sha256": a.sha256})
    return written


def cmd_export(args: argparse.Namespace) -> int:
    from export.artifacts import build_artifact
    from models.zoo import resolve

    directory = resolve(args.model)
    model = load(args)
    if getattr(args, "pdk", None):
        from .cmd_silicon import export_transistor_netlist
        return export_transistor_netlist(args, model)
    kinds = EXPORT_KINDS[args.what][args.choice]
    if args.what == "netlist":
        kinds = [NETLIST_STYLES[args.style] + k.removeprefix("netlist-") for k in kinds]
    chip = chip_from_args(args) if args.what in CHIP_EXPORTS else None
    if chip is None:
        artifacts = [build_artifact(model, k, directory) for k in kinds]
    else:
        from export.chip_export import chip_artifact
        artifacts = [chip_artifact(model, k, chip, directory) for k in kinds]
    out = Path(args.out)
    as_dir = len(artifacts) > 1 or out.is_dir() or args.out.endswith(("/", "\\"))
    result = {"model": model.spec.name, "files": _write(out, artifacts, as_dir)}
    if chip is not None:
        result["chip"] = chip.model_dump()
    if args.what == "onnx":
        result["checks"] = _check_onnx(model, kinds, artifacts, args.bench)
    print_json(result)
    return 0


def _check_onnx(model, kinds: list[str], artifacts: list, bench: bool) -> list[dict]:
    import torch

    from export.onnx_graphs import benchmark, parity
    checks = []
    x = torch.randn(256, model.data_dim, generator=torch.Generator().manual_seed(0))
    for kind, art in zip(kinds, artifacts):
        direction = kind.split("-", 1)[1]
        row = {"graph": art.filename, "max_abs_diff_vs_torch": parity(model, direction, art.data, x)}
        if bench:
            row["speed"] = [benchmark(model, direction, art.data, b) for b in (1, 1024)]
        checks.append(row)
    return checks


def cmd_simulate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from export.simulate import simulate
    from export.spice import SpiceError
    from export.vacask import VacaskError

    from .cli import UserError

    model = load(args)
    if args.pdk:
        from .cmd_silicon import simulate_transistor
        return simulate_transistor(args, model)
    chip = chip_from_args(args)
    if chip is not None:  # simulate that chip instance's netlists against its own perturbed circuit
        from export.chip_export import chip_instance
        model = chip_instance(model, chip)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    n_variants = len(variants) if model.spec.bijective else 1
    with tqdm(total=args.n * n_variants, desc=args.simulator, unit="input", file=sys.stderr,
              disable=not sys.stderr.isatty()) as bar:
        try:
            report = simulate(model, n=args.n, seed=args.seed, variants=variants, mode=args.mode, chunk=args.chunk,
                              timeout_s=args.timeout, max_seconds=args.max_seconds, force=args.force, jobs=args.jobs,
                              progress=bar.update, simulator=args.simulator)
        except (SpiceError, VacaskError) as err:
            raise UserError(str(err)) from None
    if args.json:
        print_json(report.to_json() | ({} if chip is None else {"chip": chip.model_dump()}))
    else:
        if chip is not None:
            print(f"chip instance {chip.instance}: {', '.join(chip.effects())} ({chip.model_dump_json()})")
        print(f"{report.model}: {report.simulator} vs the model (float64 dopri5, rtol 1e-9) at T*tau")
        print(report.table())
    return 0 if all(v <= 1e-3 for v in report.max_rel_error().values()) else 1
