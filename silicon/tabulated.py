"""The reference a transistor-level chip is judged against: the circuit built from the cell's
tabulated DC sweeps only, never fitted to whole-circuit runs.

Every device is the table ``tables.npz`` of its characterization (currents into its output
nodes over gate common mode, output voltage and gate difference; the parked outputs over
the output voltage), its gates the capacitive dividers its *realised* capacitors form (with
the characterized gate parasitic), and the nodes' capacitance matrix the one those
capacitors, the node capacitors and the output capacitances give
(``models.cell_law.floating_gate_matrix``). The ODE C·dV/dt = I(V) is solved in float64
(scipy, DOP853, tight tolerances) window by window, each layer's cells active and the
others parked, switching instantaneous. What this reference leaves out is what the
transistor-level simulation adds: the cells' dynamics (their internal poles and switching
transients), the gate parasitic's dependence on the operating point, and the DAC switches.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp

from models.cell_law import floating_gate_matrix

from .benches import CoreDC
from .cell import CellDesign
from .deck import RealisedDevice, Schedule


def _trilinear(grid: tuple[np.ndarray, np.ndarray, np.ndarray], table: np.ndarray, x: np.ndarray, y: np.ndarray,
               z: np.ndarray) -> np.ndarray:
    """Table ``(len(g0), len(g1), len(g2))`` at points (x, y, z), clamped to the grid."""
    out = []
    idx, frac = [], []
    for g, p in zip(grid, (x, y, z)):
        p = np.clip(p, g[0], g[-1])
        i = np.clip(np.searchsorted(g, p) - 1, 0, len(g) - 2)
        idx.append(i)
        frac.append((p - g[i]) / (g[i + 1] - g[i]))
    (i, j, k), (u, v, w) = idx, frac
    out = 0.0
    for di, fu in ((0, 1 - u), (1, u)):
        for dj, fv in ((0, 1 - v), (1, v)):
            for dk, fw in ((0, 1 - w), (1, w)):
                out = out + fu * fv * fw * table[i + di, j + dj, k + dk]
    return out


@dataclass(frozen=True)
class TabulatedChip:
    """The tabulated circuit of one realised model (see the module doc)."""

    design: CellDesign
    table: CoreDC
    devices: tuple[RealisedDevice, ...]
    n_nodes: int
    gate_parasitic_f: float
    output_capacitance_f: float
    node_cap_f: float

    @property
    def gate_total_f(self) -> float:
        return self.design.gate_cap_f + self.gate_parasitic_f

    def capacitance(self) -> np.ndarray:
        """The nodes' capacitance matrix ``(N, N)``, farads."""
        n = self.n_nodes
        base = np.full(n, self.node_cap_f)
        rows = []
        for r in self.devices:
            for k, present in ((r.src, r.elements.src_output), (r.dst, r.elements.dst_output)):
                if present and k:
                    base[k - 1] += self.output_capacitance_f
            for gate in (r.elements.plus, r.elements.minus):
                row = np.zeros(n)
                if r.src:
                    row[r.src - 1] += gate.src
                if r.dst:
                    row[r.dst - 1] += gate.dst
                rows.append(row)
        c = floating_gate_matrix(torch.as_tensor(base), torch.as_tensor(np.array(rows)), self.gate_total_f)
        return c.numpy()

    def _gate_arrays(self) -> dict[str, np.ndarray]:
        """Per device: the two gates' node couplings over C_gt and their offset steps (volts)."""
        n, c_gt, step = self.n_nodes, self.gate_total_f, self.design.offset_step_v
        out = {k: [] for k in ("plus", "minus", "plus0", "minus0", "src", "dst", "src_out", "dst_out", "layer")}
        for r in self.devices:
            for name, gate in (("plus", r.elements.plus), ("minus", r.elements.minus)):
                row = np.zeros(n + 1)
                row[r.src] += gate.src
                row[r.dst] += gate.dst
                out[name].append(row[1:] / c_gt)
                out[name + "0"].append((gate.up - gate.down) * step / c_gt)
            out["src"].append(r.src)
            out["dst"].append(r.dst)
            out["src_out"].append(r.elements.src_output)
            out["dst_out"].append(r.elements.dst_output)
            out["layer"].append(r.layer)
        return {k: np.array(v) for k, v in out.items()}

    def currents(self, volts: np.ndarray, layer: int) -> np.ndarray:
        """Currents into the nodes ``(N,)`` (amperes) at node voltages ``volts (N,)`` (volts) while
        ``layer`` is connected, from the tables (gates as their capacitors put them)."""
        d, t, g = self.design, self.table, self._arrays
        dev = volts - d.vcm_v
        vp = d.vref_v + g["plus"] @ dev + g["plus0"]
        vm = d.vref_v + g["minus"] @ dev + g["minus0"]
        cm, dvg = 0.5 * (vp + vm), vp - vm
        padded = np.concatenate([[d.vcm_v], volts])
        v_src, v_dst = padded[g["src"]], padded[g["dst"]]
        active = g["layer"] == layer
        grid, order = (t.gate_cm, t.vout, t.dvg), np.argsort(t.parked_vout)
        i_d = np.where(active, _trilinear(grid, t.i_d, cm, v_dst, dvg),
                       np.interp(v_dst, t.parked_vout[order], t.parked_d[order]))
        i_s = np.where(active, _trilinear(grid, t.i_s, cm, v_src, dvg),
                       np.interp(v_src, t.parked_vout[order], t.parked_s[order]))
        current = np.zeros(self.n_nodes + 1)
        np.add.at(current, g["dst"], np.where(g["dst_out"], i_d, 0.0))
        np.add.at(current, g["src"], np.where(g["src_out"], i_s, 0.0))
        return current[1:]

    @property
    def _arrays(self) -> dict[str, np.ndarray]:
        cached = self.__dict__.get("_gate_cache")
        if cached is None:
            cached = self._gate_arrays()
            object.__setattr__(self, "_gate_cache", cached)
        return cached

    def solve(self, z: np.ndarray, sched: Schedule, rtol: float = 1e-9) -> np.ndarray:
        """Node voltages (model volts) at the end of the schedule for latents ``z (n, d)``:
        ``(n, d)``. Inputs are the nodes' values when the first layer connects."""
        d = self.design
        inv = np.linalg.inv(self.capacitance())
        out = np.empty_like(z, dtype=np.float64)
        for row, zi in enumerate(np.asarray(z, dtype=np.float64)):
            v = d.vcm_v + d.v0_v * zi[: self.n_nodes]
            for layer, (t0, t1) in enumerate(sched.layer_windows_s):
                sol = solve_ivp(lambda _t, volts, k=layer: inv @ self.currents(volts, k), (t0, t1), v,
                                method="DOP853", rtol=rtol, atol=1e-9 * d.v0_v)
                v = sol.y[:, -1]
            out[row] = (v - d.vcm_v) / d.v0_v
        return out
