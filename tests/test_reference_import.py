"""`knet import-reference`: results folders of the published KirchhoffNet code → our checkpoint.

Every folder here is built by the test itself (a config it writes, a state_dict with the
published key names saved with torch.save); no published weights are used.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torchdiffeq import odeint

from models.checkpoint import load_model
from models.config import CircuitSpec, LayerSpec, SolverConfig
from models.flow import KirchhoffNet, standard_normal_log_prob
from models.reference import ReferenceFormatError, read_folder
from models.reference_topology import build

ROOT = Path(__file__).resolve().parent.parent
TIGHT = SolverConfig(method="dopri5", rtol=1e-10, atol=1e-10, max_steps=1_000_000)


# -- connection builders: edge lists counted by hand ---------------------------------------
# _fully_connect(3, ground, [1, 2]): nodes 0, 1, 2; each visited ordered pair (i, j) adds
# one i→j then two j→i
FULL_3_GND_1_2 = [(0, 1), (1, 0), (1, 0), (0, 2), (2, 0), (2, 0), (1, 0), (0, 1), (0, 1),
                  (1, 2), (2, 1), (2, 1), (2, 0), (0, 2), (0, 2), (2, 1), (1, 2), (1, 2)]
# 1 channel, width 2 × height 3: nodes row x=0: 1 2 3, row x=1: 4 5 6; two 2×2 windows
WINDOW_A, WINDOW_B = (1, 2, 4, 5), (2, 3, 5, 6)
NEIGHBOUR_2x3_K2 = [(s, d) for w in (WINDOW_A, WINDOW_B) for s in w for d in w if s != d]
# 2 channels of a 1×2 grid (channel 0: nodes 1 2, channel 1: nodes 3 4), 1×1 windows span channels
CHANNELS = [(1, 3), (3, 1), (2, 4), (4, 2)]


@pytest.mark.parametrize("name, args, expected", [
    ("_fully_connect", {"num_node": 3, "repeat": [1, 2]}, FULL_3_GND_1_2),
    ("_fully_connect", {"num_node": 2, "include_gnd": False, "repeat": [1, 0]}, [(1, 2), (2, 1)]),
    ("_simple_connect", {"num_node": 3, "repeat": [2, 5]}, [(0, 1), (0, 1), (1, 2), (1, 2), (2, 3), (2, 3)]),
    ("_neighbor_index", {"num_channel": 1, "width": 2, "height": 3, "neighbor_size": 2}, NEIGHBOUR_2x3_K2),
    # padding = k − 1 = 1 around a 1×2 grid: six 2×2 windows, two of which hold both nodes
    ("_neighbor_index", {"num_channel": 1, "width": 1, "height": 2, "neighbor_size": 2, "padding": True},
     [(1, 2), (2, 1), (1, 2), (2, 1)]),
    ("_neighbor_index", {"num_channel": 2, "width": 1, "height": 2, "neighbor_size": 1}, CHANNELS),
    ("_neighbor_index", {"num_channel": 2, "width": 1, "height": 2, "neighbor_size": 1, "repeat": 2},
     [(1, 3), (1, 3), (3, 1), (3, 1), (2, 4), (2, 4), (4, 2), (4, 2)]),
    ("_neighbor_index", {"num_channel": 2, "width": 1, "height": 2, "neighbor_size": 1, "parallel": 2},
     CHANNELS + [(5, 7), (7, 5), (6, 8), (8, 6)]),
    # grid 1..4, then n→0 and 0→n per node, then hub 5 ↔ every node 0..4
    ("_mix_connect", {"num_channel": 2, "width": 1, "height": 2, "neighbor_size": 1, "fully_connect_node": 1,
                      "repeat": [1, 1]},
     CHANNELS + [(1, 0), (0, 1), (2, 0), (0, 2), (3, 0), (0, 3), (4, 0), (0, 4)]
     + [(0, 5), (5, 0), (1, 5), (5, 1), (2, 5), (5, 2), (3, 5), (5, 3), (4, 5), (5, 4)]),
    ("_mix_connect", {"num_channel": 2, "width": 1, "height": 2, "neighbor_size": 1, "fully_connect_node": 0},
     CHANNELS + [(1, 0), (2, 0), (3, 0), (4, 0)]),  # default repeat [1, 0]
])
def test_builders_give_the_hand_counted_edges(name, args, expected):
    assert build(name, args, "net") == expected


def test_parallel_stacks_doubling_copies():
    edges = build("_neighbor_index", {"num_channel": 2, "width": 1, "height": 2, "neighbor_size": 1,
                                      "parallel": 3}, "net")
    assert edges == [(s + 4 * i, d + 4 * i) for i in range(4) for s, d in CHANNELS]


def test_mnist_grid_edge_count():
    # 26×26 windows of 3×3 on 28×28, 9·8 ordered pairs each, plus n→0 and 0→n for 784 nodes
    edges = build("_mix_connect", {"num_channel": 1, "width": 28, "height": 28, "neighbor_size": 3,
                                   "fully_connect_node": 0, "repeat": [1, 1]}, "net")
    assert len(edges) == 26 * 26 * 72 + 2 * 784 and max(max(e) for e in edges) == 784


# -- folders in the published format -----------------------------------------------------
def fully(num_node: int = 3, repeat=(1, 1)) -> dict:
    return {"name": "_fully_connect", "args": {"num_node": num_node, "repeat": list(repeat)}}


def write_folder(folder: Path, structs: list[dict], device: str, params: list[torch.Tensor],
                 t_end: list[float], bench: str = "twomoon", **network) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"batch_size": 8, "test_bench": bench,
              "network": {"adjoint": True, "initialization": "kaiming", "model": {"name": device, "args": {}},
                          "net_struct": structs, **network},
              "simulation": {"method": "dopri5", "tol": "1e-4", "first_step": "1e-3", "min_step": "1e-6",
                             "step_size": 1e-6, "t_end": t_end}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save({f"circuit.layer_list.{i}.model.param": p.to(torch.float32) for i, p in enumerate(params)},
               folder / "model.pth")
    return folder


def random_params(rows: int, edges: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, edges, generator=torch.Generator().manual_seed(seed)) * 0.7


# the published device currents, written out from their definitions
PUBLISHED_CURRENT = {
    "ShiftTanh2": lambda p, s, d: torch.tanh(p[0] * s + p[1] * d + p[2]),
    "ShiftTanh1": lambda p, s, d: torch.tanh(p[1] * (s - d) + p[0]),
    "ShiftRelu2": lambda p, s, d: torch.relu(p[0] * s + p[1] * d + p[2]),
    "ShiftLeakyRelu2": lambda p, s, d: torch.nn.functional.leaky_relu(p[0] * s + p[1] * d + p[2], 0.01),
    "Conductance": lambda p, s, d: p[0] * (s - d),
}


def published_rhs(edges, current, p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """dv/dt of the published circuit layer: −i at every source, +i at every destination."""
    src = torch.tensor([e[0] for e in edges])
    dst = torch.tensor([e[1] for e in edges])
    padded = torch.cat([torch.zeros_like(v[:, :1]), v], dim=1)
    i = current(p, padded[:, src], padded[:, dst])
    out = torch.zeros_like(padded).index_add(1, dst, i).index_add(1, src, -i)
    return out[:, 1:]


@pytest.mark.parametrize("device, rows, family, names", [
    ("ShiftTanh2", 3, "affine-tanh", {"a": 0, "b": 1, "c": 2}),
    ("ShiftRelu2", 3, "affine-relu", {"a": 0, "b": 1, "c": 2}),
    ("ShiftLeakyRelu2", 3, "affine-leaky_relu", {"a": 0, "b": 1, "c": 2}),
    ("ShiftTanh1", 3, "diff-tanh", {"a": 1, "c": 0}),
    ("Conductance", 3, "conductance", {"g": 0}),
])
def test_device_parameter_layouts(tmp_path, device, rows, family, names):
    edges = FULL_3_GND_1_2
    p = random_params(rows, len(edges), 1).to(torch.float64)
    folder = write_folder(tmp_path / device, [fully(repeat=(1, 2))], device, [p], [0.0, 0.5])
    imported = read_folder(folder)
    assert imported.spec.device == family and imported.spec.layers[0].edges == tuple(edges)
    assert set(imported.params[0]) == set(names)
    for ours, row in names.items():
        torch.testing.assert_close(imported.params[0][ours], p[row].to(torch.float32).double())
    v = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2
    model = imported.model(torch.float64)
    expected = published_rhs(edges, PUBLISHED_CURRENT[device], p.to(torch.float32).double(), v)
    torch.testing.assert_close(model.layers[0].operator("gather").rhs(v), expected)


@pytest.mark.parametrize("negation, activation, family, current", [
    (True, "tanh", "diff-tanh", lambda p, s, d: torch.tanh(p[1] * (s - d) + p[0])),
    (False, "relu", "affine-relu", lambda p, s, d: torch.relu(p[0] * s + p[1] * d + p[2])),
    (True, None, "diff-identity", lambda p, s, d: p[1] * (s - d) + p[0]),
])
def test_generic_device_class(tmp_path, negation, activation, family, current):
    rows = 2 if negation else 3
    p = random_params(rows, 12, 3).to(torch.float32).double()
    folder = write_folder(tmp_path, [fully()], "Device", [p], [0.0, 1.0])
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["network"]["model"]["args"] = {"negation": negation, "activation": activation}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    model = read_folder(folder).model()
    assert model.spec.device == family
    v = torch.randn(4, 2, dtype=torch.float64)
    edges = build("_fully_connect", {"num_node": 3}, "net")
    torch.testing.assert_close(model.layers[0].operator("gather").rhs(v), published_rhs(edges, current, p, v))


# -- round trip: a circuit we build → folder → checkpoint → same circuit -----------------
def source_circuit() -> tuple[KirchhoffNet, list[torch.Tensor]]:
    """Two diff-tanh layers on hand-listed edges (what _fully_connect(3, [1, 2]) and
    _fully_connect(3, [1, 1]) give), and the published [3, E] tensors of its parameters."""
    edges1 = [(0, 1), (1, 0), (0, 2), (2, 0), (1, 0), (0, 1), (1, 2), (2, 1), (2, 0), (0, 2), (2, 1), (1, 2)]
    layers = (LayerSpec(duration=0.4, nodes=2, edges=tuple(FULL_3_GND_1_2)),
              LayerSpec(duration=0.6, nodes=2, edges=tuple(edges1)))
    spec = CircuitSpec(name="built", device="diff-tanh", data_dim=2, layers=layers)
    published = [random_params(3, len(layer.edges), 10 + i).to(torch.float32).double()
                 for i, layer in enumerate(layers)]
    params = [{"a": p[1], "c": p[0]} for p in published]  # ShiftTanh1: tanh(p1·(v_s − v_d) + p0)
    model = KirchhoffNet(spec, params).to(torch.float64)
    model.requires_grad_(False)
    return model, published


def write_source_folder(folder: Path, **kw) -> tuple[KirchhoffNet, Path]:
    model, published = source_circuit()
    write_folder(folder, [fully(repeat=(1, 2)), fully()], "ShiftTanh1", published, [0.0, 0.4, 1.0], **kw)
    return model, folder


def published_log_prob(model: KirchhoffNet, published: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """log q(x) of the published flow, integrated here independently: reverse dopri5 with
    the published device formula and an autograd trace of the Jacobian."""
    def field(edges, p):
        def f(t, state):
            v = state[0]
            with torch.enable_grad():
                v = v.detach().requires_grad_(True)
                dv = published_rhs(edges, PUBLISHED_CURRENT["ShiftTanh1"], p, v)
                div = sum(torch.autograd.grad(dv[:, k].sum(), v, retain_graph=True)[0][:, k] for k in range(v.shape[1]))
            return dv.detach(), div.detach()
        return f

    v, ell = x, torch.zeros(x.shape[0], dtype=torch.float64)
    for layer, p in reversed(list(zip(model.spec.layers, published))):
        t = torch.tensor([layer.duration, 0.0], dtype=torch.float64)
        vs, ells = odeint(field(layer.edges, p), (v, torch.zeros_like(ell)), t, rtol=1e-10, atol=1e-10)
        v, ell = vs[-1], ell + ells[-1]
    return standard_normal_log_prob(v) + ell  # ell = −∫_0^T div dt


def test_round_trip_gives_the_built_circuit(tmp_path):
    model, folder = write_source_folder(tmp_path / "run")
    imported = read_folder(folder)
    assert [layer.edges for layer in imported.spec.layers] == [layer.edges for layer in model.spec.layers]
    assert [layer.duration for layer in imported.spec.layers] == pytest.approx([0.4, 0.6])
    for ours, theirs in zip(imported.params, model.raw_params()):
        assert set(ours) == set(theirs)
        for k in ours:
            torch.testing.assert_close(ours[k], theirs[k])
    x = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    got = imported.model(torch.float64).log_prob(x, TIGHT)
    want = model.log_prob(x, TIGHT)
    assert got.stats.ok and want.stats.ok
    torch.testing.assert_close(got.logp, want.logp, rtol=0, atol=1e-9)
    _, published = source_circuit()
    torch.testing.assert_close(got.logp, published_log_prob(model, published, x), rtol=0, atol=1e-6)


def test_provenance_and_published_solver(tmp_path):
    _, folder = write_source_folder(tmp_path / "run")
    spec = read_folder(folder).spec
    rec = spec.imported_from
    assert rec.format == "kirchhoffnet-reference" and rec.device_class == "ShiftTanh1"
    assert rec.config_sha256 == hashlib.sha256((folder / "config.yaml").read_bytes()).hexdigest()
    assert rec.weights_sha256 == hashlib.sha256((folder / "model.pth").read_bytes()).hexdigest()
    assert spec.name == "twomoon" and rec.test_bench == "twomoon"
    assert (spec.solver.method, spec.solver.rtol, spec.solver.atol) == ("dopri5", 1e-4, 1e-4)


def test_generation_bench_ignores_the_unused_projector(tmp_path):
    _, folder = write_source_folder(tmp_path / "run", bench="genmnist", projector="last10", fill="zeros")
    assert read_folder(folder).spec.imported_from.ignored_keys == ("network.projector", "network.fill")


# -- refusals name the key ------------------------------------------------------------------
def _edit_config(key_path: list, value):
    def edit(folder: Path) -> None:
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        node = cfg
        for k in key_path[:-1]:
            node = node[k]
        node[key_path[-1]] = value
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    return edit


def _edit_state(change):
    def edit(folder: Path) -> None:
        state = torch.load(folder / "model.pth", weights_only=True)
        change(state)
        torch.save(state, folder / "model.pth")
    return edit


def _both(*edits):
    def edit(folder: Path) -> None:
        for e in edits:
            e(folder)
    return edit


REFUSALS = [
    (_both(_edit_config(["test_bench"], "mnist"), _edit_config(["network", "encoder"], [2, 16])),
     r"network\.encoder"),
    (_both(_edit_config(["test_bench"], "mnist"), _edit_config(["network", "projector"], "last10")),
     r"network\.projector"),
    (_edit_config(["network", "model", "name"], "ShiftSigmoid3"),
     r"network\.model\.name: unknown device class 'ShiftSigmoid3'"),
    (_edit_config(["network", "model", "name"], "ShiftRelu1"), r"network\.model\.name: device class 'ShiftRelu1'"),
    (_edit_config(["network", "model", "args"], {"scale": 2}), r"network\.model\.args"),
    (_edit_config(["network", "net_struct", 0, "name"], "_pregiven"), r"network\.net_struct\[0\]\.name"),
    (_edit_config(["network", "net_struct", 1, "args", "kernel"], 3), r"network\.net_struct\[1\]\.args\.kernel"),
    (_edit_config(["network", "net_struct", 1, "args", "num_node"], 4), r"network\.net_struct\[1\]: layer has 3 nodes"),
    (_edit_config(["simulation", "t_end"], [0.0, 1.0]), r"simulation\.t_end"),
    (_edit_state(lambda s: s.__setitem__("projector.layers.0.weight", torch.zeros(2, 2))),
     r"state_dict key 'projector\.layers\.0\.weight'"),
    (_edit_state(lambda s: s.pop("circuit.layer_list.1.model.param")),
     r"missing state_dict key 'circuit\.layer_list\.1\.model\.param'"),
    (_edit_state(lambda s: s.__setitem__("circuit.layer_list.0.model.param", torch.zeros(3, 17))),
     r"circuit\.layer_list\.0\.model\.param has shape \[3, 17\].*\[3, 18\]"),
    (_edit_state(lambda s: s["circuit.layer_list.1.model.param"].__setitem__((0, 3), float("nan"))),
     r"circuit\.layer_list\.1\.model\.param\[0, 3\] is not finite"),
]


@pytest.mark.parametrize("edit, message", REFUSALS)
def test_unsupported_pieces_are_refused_naming_the_key(tmp_path, edit, message):
    _, folder = write_source_folder(tmp_path / "run")
    edit(folder)
    with pytest.raises(ReferenceFormatError, match=message):
        read_folder(folder)


# -- the command line ------------------------------------------------------------------------
def knet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "knet", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_import_calibrates_tiers_and_serves_sample_and_logprob(tmp_path):
    model, folder = write_source_folder(tmp_path / "run")
    out = tmp_path / "ckpt"
    res = knet("import-reference", str(folder), "--out", str(out), "--calibration-points", "32")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["calibration"]["status"] == "calibrated" and report["edges"] == 30
    assert report["tiers"]["status"] == "calibrated" and "warning" not in res.stderr
    circuit = json.loads((out / "circuit.json").read_text())
    assert circuit["imported_from"]["device_class"] == "ShiftTanh1"
    assert circuit["calibration"]["points"] == 32 and circuit["solver"]["method"] == "rk4"
    tiers = {t["tolerance_nats"]: t for t in circuit["accuracy_tiers"]}
    assert report["tiers"]["tolerances"] == list(tiers) and 1e-3 in tiers
    from export.artifacts import build_artifact
    from models.checkpoint import load_model
    manifest = json.loads(build_artifact(load_model(out), "manifest", out).data)
    assert manifest["imported_from"] == circuit["imported_from"]  # the hardware handoff says where it came from
    # answers come from the default (1e-3 nats) tier, and say so
    default = tiers[1e-3]
    solver = SolverConfig(method="rk4", steps_per_layer=tuple(default["steps_per_layer"]))

    res = knet("sample", str(out), "-n", "5", "--seed", "3", "--dtype", "float64")
    assert res.returncode == 0, res.stderr
    sampled = json.loads(res.stdout)
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    want = model.sample(0, z=z, solver=solver)
    torch.testing.assert_close(torch.tensor(sampled["samples"], dtype=torch.float64), want.x, rtol=0, atol=1e-9)
    torch.testing.assert_close(torch.tensor(sampled["logprob"], dtype=torch.float64), want.logp, rtol=0, atol=1e-9)
    assert sampled["accuracy_tier"] == 1e-3 and sampled["error_bound"] == default["max_error_logp"]

    # points inside the verified box: the answer is within the tier's bound of the exact flow
    low, high = torch.tensor(default["region_low"]), torch.tensor(default["region_high"])
    points = (low + (high - low) * torch.tensor([[0.3, 0.6], [0.5, 0.5], [0.7, 0.2]])).tolist()
    (tmp_path / "points.json").write_text(json.dumps(points))
    res = knet("logprob", str(out), "--points", str(tmp_path / "points.json"), "--dtype", "float64")
    assert res.returncode == 0, res.stderr
    answer = json.loads(res.stdout)
    assert answer["accuracy_tier"] == 1e-3 and answer["in_verified_region"] is True
    got = torch.tensor(answer["logprob"], dtype=torch.float64)
    torch.testing.assert_close(got, model.log_prob(torch.tensor(points, dtype=torch.float64), solver).logp,
                               rtol=0, atol=1e-9)
    tight = model.log_prob(torch.tensor(points, dtype=torch.float64), TIGHT).logp
    assert float((got - tight).abs().max()) <= 2 * answer["error_bound"]  # empirical bound, float32-verified


def test_cli_import_without_tiers_warns_and_answers_without_a_bound(tmp_path):
    _, folder = write_source_folder(tmp_path / "run")
    out = tmp_path / "ckpt"
    res = knet("import-reference", str(folder), "--out", str(out), "--calibration-points", "16", "--no-tiers")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["tiers"]["status"] == "skipped"
    assert json.loads((out / "circuit.json").read_text())["accuracy_tiers"] == []
    (tmp_path / "points.json").write_text("[[0.1, 0.2]]")
    res = knet("logprob", str(out), "--points", str(tmp_path / "points.json"))
    assert res.returncode == 0, res.stderr
    answer = json.loads(res.stdout)
    assert answer["accuracy_tier"] is None and answer["error_bound"] is None and len(answer["logprob"]) == 1


def test_cli_unreachable_tier_is_reported_not_claimed(tmp_path):
    _, folder = write_source_folder(tmp_path / "run")
    out = tmp_path / "ckpt"
    res = knet("import-reference", str(folder), "--out", str(out), "--calibration-points", "16", "--tiers", "1e-12")
    assert res.returncode == 0, res.stderr
    tiers = json.loads(res.stdout)["tiers"]
    assert tiers["status"] == "none" and tiers["tolerances"] == [] and "float64" in tiers["missing"]["1e-12"]
    assert "warning: no verified accuracy tiers (none: 1e-12 nats: no RK4 step counts" in res.stderr
    circuit = json.loads((out / "circuit.json").read_text())
    assert circuit["accuracy_tiers"] == [] and circuit["calibration"] is not None  # the calibration is kept


def test_cli_without_a_default_tier_says_which_tier_answers(tmp_path):
    _, folder = write_source_folder(tmp_path / "run")
    out = tmp_path / "ckpt"
    res = knet("import-reference", str(folder), "--out", str(out), "--calibration-points", "16", "--tiers", "0.05")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["tiers"]["tolerances"] == [0.05]
    assert ("warning: no 0.001-nats tier; requests without a tolerance get the most accurate one (0.05 nats"
            in res.stderr)
    (tmp_path / "points.json").write_text("[[0.1, 0.2]]")
    res = knet("logprob", str(out), "--points", str(tmp_path / "points.json"))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["accuracy_tier"] == 0.05


def test_cli_contradictory_tier_flags_are_refused(tmp_path):
    _, folder = write_source_folder(tmp_path / "run")
    for flag in ("--no-tiers", "--no-calibrate"):
        res = knet("import-reference", str(folder), "--out", str(tmp_path / "ckpt"), "--tiers", "0.01", flag)
        assert res.returncode == 2 and f"--tiers and {flag}: choose one" in res.stderr
    assert not (tmp_path / "ckpt").exists()


def test_cli_calibration_timeout_keeps_a_working_checkpoint(tmp_path):
    _, folder = write_source_folder(tmp_path / "run")
    out = tmp_path / "ckpt"
    res = knet("import-reference", str(folder), "--out", str(out), "--calibration-timeout-s", "0.05")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["calibration"]["status"] == "timeout" and report["tiers"]["status"] == "skipped"
    assert "warning: calibration timeout" in res.stderr and "Traceback" not in res.stderr
    assert "warning: no verified accuracy tiers" in res.stderr
    circuit = json.loads((out / "circuit.json").read_text())
    assert circuit["calibration"] is None and circuit["solver"]["method"] == "dopri5"
    assert circuit["accuracy_tiers"] == []
    sampled = load_model(out, torch.float64).sample(4, torch.Generator().manual_seed(0))
    assert sampled.stats.ok and bool(torch.isfinite(sampled.logp).all())


def test_cli_refusal_is_one_line_exit_2(tmp_path):
    _, folder = write_source_folder(tmp_path / "run")
    _both(_edit_config(["test_bench"], "mnist"), _edit_config(["network", "projector"], "last10"))(folder)
    res = knet("import-reference", str(folder), "--out", str(tmp_path / "ckpt"))
    assert res.returncode == 2
    assert res.stderr.startswith("error: network.projector") and "Traceback" not in res.stderr
    assert not (tmp_path / "ckpt").exists()

