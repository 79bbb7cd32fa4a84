"""Number formatting shared by the report and the plots."""
from __future__ import annotations

import math


def fmt_time(s: float | None) -> str:
    """Seconds → a short string in ns/µs/ms/s (``–`` for missing)."""
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "–"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(s) >= scale or unit == "ns":
            return f"{s / scale:.3g} {unit}"
    return f"{s:.3g} s"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "–"
    e = math.floor(math.log10(x)) if x > 0 else 0
    if abs(e) >= 4:
        return f"{x / 10 ** e:.2f}·10^{e}×"
    return f"{x:,.0f}×" if x >= 100 else f"{x:.3g}×"


def fmt_num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}g}"


def fmt_errors(d: dict | None) -> str:
    return "; ".join(f"{k}: {v:g}" for k, v in sorted(d.items())) if d else "0"
