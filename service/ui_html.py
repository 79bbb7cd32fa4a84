"""HTML of the model pages (``service.ui``): plain markup from facts already gathered.

Everything here is a pure function of its arguments (no I/O, no model calls), so a page is
rendered once per model version and then served from memory. The skeleton, the CSS and the
"try it" script are package data in ``service/ui_assets/``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from html import escape
from pathlib import Path
from string import Template

ASSETS = Path(__file__).resolve().parent / "ui_assets"
SI_PREFIXES = ((1e-15, "f"), (1e-12, "p"), (1e-9, "n"), (1e-6, "µ"), (1e-3, "m"), (1.0, ""), (1e3, "k"))


@cache
def asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class ArtifactRow:
    """One downloadable file: ``url`` None (with ``reason``) when it cannot be built."""

    kind: str
    filename: str
    description: str
    size_bytes: int | None = None
    sha256: str | None = None
    url: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Quality:
    """A model's evaluation figure in nats (lower is better) and the published one, if any."""

    label: str
    value: float
    std_error: float | None
    published: float | None
    samples: int | None

    def short(self) -> str:
        se = f" ± {self.std_error:.3f}" if self.std_error is not None else ""
        pub = f" (published {self.published:.3f})" if self.published is not None else ""
        return f"{self.label} {self.value:.3f}{se}{pub}"


def si(value: float, unit: str) -> str:
    """``2.5e-08, "s"`` → ``"25 ns"`` (3 significant digits)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g} {unit}"
    scale, prefix = SI_PREFIXES[0]
    for s, p in SI_PREFIXES:
        if abs(value) >= s:
            scale, prefix = s, p
    return f"{value / scale:.3g} {prefix}{unit}"


def _transistor_level(f: dict) -> str:
    """The chip measured at transistor level beside the behavioural projection, when stored."""
    t = f.get("transistor")
    if not t or "error" in t:
        return ""
    p = t["behavioural_projection"]
    err = t.get("error_model_volts", {})
    acc = ", ".join(f"{k} {v['median']:.3f} (max {v['max']:.3f})" for k, v in err.items())
    rows = "".join(f"<tr><td>{escape(a)}</td><td class=num>{b}</td><td class=num>{c}</td></tr>" for a, b, c in (
        ("latency per forward pass", si(p["latency_s"], "s"), si(t["latency_s"], "s")),
        ("energy per sample", si(p["energy_per_sample_j"], "J"), si(t["energy_per_sample_j"], "J")),
        ("analog core area", "—", f'{t["area_um2"] / 1e6:.3g} mm²'),
        ("transistors", "—", str(t["transistors"]))))
    return (f'<h3 id="transistor-level">Measured at transistor level</h3><table><tr><th></th>'
            f'<th>behavioural projection</th><th>{escape(t["label"])}</th></tr>{rows}</table>'
            f'<p>Agreement of the simulated chip with its references over {t["samples"]} samples '
            f'(|Δx| in model volts, median): {escape(acc)}.</p>')


def _table(rows: list[tuple[str, str]]) -> str:
    """Two-column table; the values are already HTML (escape before)."""
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _section(title: str, inner: str, css: str = "", ident: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    idattr = f' id="{ident}"' if ident else ""
    return f"<section{cls}{idattr}><h2>{escape(title)}</h2>{inner}</section>"


def page(title: str, heading: str, lede: str, body: str, script: str = "") -> bytes:
    """A whole page from the skeleton; ``heading``, ``lede``, ``body`` are HTML."""
    html = Template(asset("page.html")).substitute(title=escape(title), heading=heading, lede=lede, body=body,
                                                   css=asset("style.css"), script=script)
    return html.encode("utf-8")


def error_page(status: int, message: str) -> bytes:
    """The page for an error answer: the same status and message as the JSON API."""
    body = _section(f"{status}", f'<p class="error" id="error">{escape(message)}</p>'
                    '<p>See <a href="/ui">all served models</a>.</p>', "wide")
    return page(f"error {status}", f"Error {status}", "The JSON API gives the same answer.", body)


def index_page(models: list[dict], unavailable: dict[str, str]) -> bytes:
    """Every served model with task, size, quality and projected chip latency; ``models``
    are :func:`service.ui.model_facts` dicts."""
    head = ("<tr><th>model</th><th>task</th><th>device</th><th class=num>data dim.</th><th class=num>devices</th>"
            "<th class=num>parameters</th><th>quality (nats, lower is better)</th><th class=num>chip latency</th></tr>")
    rows = "".join(
        f'<tr class="model-row"><td><a href="/ui/{escape(f["name"])}">{escape(f["name"])}</a></td>'
        f'<td>{escape(f["task"])}</td><td>{escape(f["device"])}</td><td class=num>{f["data_dim"]}</td>'
        f'<td class=num>{f["devices"]}</td><td class=num>{f["parameters"]}</td>'
        f'<td>{escape(f["quality"].short()) if f["quality"] else "—"}</td>'
        f'<td class=num>{si(f["chip_latency_s"], "s")}</td></tr>' for f in models)
    body = _section("Served models", f"<table id=models>{head}{rows}</table>", "wide")
    if unavailable:
        items = "".join(f"<li><b>{escape(n)}</b>: {escape(why)}</li>" for n, why in unavailable.items())
        body += _section("Stored but not served", f"<ul>{items}</ul>", "wide")
    lede = (f"{len(models)} analog-circuit flow models served here. Each page shows what the circuit is, "
            "how good it is, what a chip would take, its pictures and every hardware file.")
    return page("models", "KirchhoffNet models", escape(lede), body)


def model_page(f: dict, figures: list[tuple[str, str]], artifacts: list[ArtifactRow], max_n: int) -> bytes:
    """One model's page from :func:`service.ui.model_facts` ``f``, its pictures
    ``[(url, caption)]`` and its downloadable files (bundle first)."""
    name = f["name"]
    what = _table([
        ("task", escape(f["task"])), ("data dimension", str(f["data_dim"])),
        ("device family", f'<code>{escape(f["device"])}</code>'), ("layers", str(f["layers"])),
        ("nodes per layer", escape(", ".join(map(str, f["nodes"])))), ("devices (edges)", str(f["devices"])),
        ("parameters", str(f["parameters"])), ("end time T", f'{f["end_time"]:g} (model time units)'),
        ("serving solver", escape(f["solver"])), ("version", f'<code>{escape(f["version"])}</code>'),
        ("checkpoint SHA-256", f'<span class="hash">{escape(f["checkpoint_sha256"])}</span>'),
    ])
    hw = f["hardware"]
    chip = (f'<p><span class="big" id="chip-latency">{si(f["chip_latency_s"], "s")}</span> projected per '
            f'forward pass (T·τ {si(f["settle_s"], "s")} + DAC {si(hw["dac_setup_s"], "s")} + ADC '
            f'{si(hw["adc_readout_s"], "s")}), whatever the batch or parameter count.</p>'
            f'<p>Energy per sample ≈ <b>{si(f["energy_j"], "J")}</b>: capacitors {si(f["capacitor_energy_j"], "J")} '
            f'+ devices at most {si(f["device_energy_j"], "J")} (full-scale currents and swings).</p>')
    chip += _transistor_level(f)
    chip += _table([("node capacitance C", si(hw["capacitance_f"], "F")),
                    ("V0 (one model volt)", si(hw["voltage_scale_v"], "V")),
                    ("I0 (one model ampere)", si(hw["current_scale_a"], "A")), ("τ = C·V0/I0", si(f["tau_s"], "s")),
                    ("DAC set-up", si(hw["dac_setup_s"], "s")), ("ADC read-out", si(hw["adc_readout_s"], "s"))])
    q = f["quality"]
    if q is None:
        quality = "<p>No evaluation stored with this version (<code>knet eval NAME --write</code>).</p>"
    else:
        quality = _table([
            ("measure", escape(q.label) + " (nats, lower is better)"),
            ("this model", f'<span class="big" id="quality">{q.value:.3f}</span>'
                           + (f" ± {q.std_error:.3f} (s.e.)" if q.std_error is not None else "")),
            ("published KirchhoffNet", f"{q.published:.3f}" if q.published is not None else "— (none published)"),
            ("evaluated on", f"{q.samples} fresh samples" if q.samples else "—"),
        ] + [(k, escape(v)) for k, v in f["eval_extra"]])
    figs = "".join(f'<figure><img src="{escape(url)}" alt="{escape(cap)}" loading="eager"><figcaption>{escape(cap)}'
                   "</figcaption></figure>" for url, cap in figures) or "<p>No pictures for this version.</p>"
    body = (_section("What it is", what) + _section("On a chip", chip) + _section("Quality", quality)
            + _tryit(f, max_n) + _section("Pictures", f'<div class="figs">{figs}</div>', "wide", "pictures")
            + _section("Downloads", _artifact_table(artifacts), "wide", "downloads"))
    lede = (f"{escape(f['task'])}: a {f['layers']}-layer circuit of {f['devices']} "
            f"<code>{escape(f['device'])}</code> devices on {f['data_dim']} data nodes.")
    return page(name, f"{escape(name)} <small>version {escape(f['version'])}</small>", lede, body,
                f"<script>\n{asset('tryit.js')}</script>")


def _tryit(f: dict, max_n: int) -> str:
    name, images = f["name"], f["data_dim"] == 64
    n = 16 if images else 256
    body = json.dumps({"model": name, "n": n, "seed": 0})
    shown = "8×8 images" if images else ("points" if f["data_dim"] == 2 else "points (first two coordinates)")
    req = escape(body, quote=False).replace(f'"n": {n}', '"n": <span class="n-val">' + str(n) + "</span>").replace(
        '"seed": 0', '"seed": <span class="seed-val">0</span>')
    origin = '<span class="origin">http://127.0.0.1:3000</span>'  # the script puts the page's own origin here
    inner = (f'<form id="tryit" data-model="{escape(name)}" data-dim="{f["data_dim"]}" '
             f'data-chip-s="{f["chip_latency_s"]!r}">'
             f'<label>samples n<input name="n" type="number" min="1" max="{max_n}" value="{n}" required></label>'
             '<label>seed<input name="seed" type="number" min="0" value="0"></label>'
             '<button type="submit">Sample</button></form>'
             '<div class="tryit-grid"><svg id="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1" '
             'preserveAspectRatio="xMidYMid meet"></svg><div>'
             f'<p id="timing">Draws {shown} from <code>POST /sample</code>.</p>'
             "<p>The same from a terminal:</p>"
             f"<pre id=\"curl\">curl -s {origin}/sample "
             f"-H 'Content-Type: application/json' -d '{req}'\n"
             f'curl -sOJ {origin}/models/{escape(name)}/artifacts/bundle</pre>'
             f'<pre id="python">import httpx\nr = httpx.post("{origin}/sample", json={req})\n'
             'print(r.json()["samples"], r.json()["solve_s"], r.json()["projected_chip_latency_s"])</pre></div></div>')
    return _section("Try it", inner, "wide", "try")


def _artifact_table(rows: list[ArtifactRow]) -> str:
    head = "<tr><th>file</th><th>what</th><th class=num>size</th><th>SHA-256</th></tr>"
    out = []
    for r in rows:
        link = (f'<a class="download" data-kind="{escape(r.kind)}" href="{escape(r.url)}" download>'
                f'{escape(r.filename)}</a>' if r.url else escape(r.filename))
        size = f"{r.size_bytes:,} B" if r.size_bytes is not None else "—"
        sha = f'<span class="hash">{escape(r.sha256)}</span>' if r.sha256 else escape(r.reason or "—")
        out.append(f"<tr><td>{link}</td><td>{escape(r.description)}</td><td class=num>{size}</td><td>{sha}</td></tr>")
    return f"<table id=artifacts>{head}{''.join(out)}</table>"
