"""What the templates need beyond the API's models: number formats, token display, heat
intensities and the histogram's geometry, and the Jinja environment that holds them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates

from probes.evidence.store import FeatureStatistics

WEB = Path(__file__).parent


def num(value: float | None, digits: int = 3) -> str:
    """A number with `digits` significant digits; an en dash for None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value == 0:
        return "0"
    if abs(value) >= 10 ** (digits + 2) or abs(value) < 1e-4:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def pct(value: float | None) -> str:
    """A fraction as a percentage, readable for densities from 1e-7 to 1."""
    if value is None:
        return "–"
    if value == 0:
        return "0%"
    return f"{num(value * 100, 2)}%"


def token(text: str) -> str:
    """A token as a chip shows it: spaces and line breaks made visible."""
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def heat(act: float, scale: float) -> float:
    """The heat (0..1) of an activation against the scale of its feature."""
    if act <= 0 or scale <= 0:
        return 0.0
    return round(min(act / scale, 1.0), 3)


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    lo: float
    hi: float
    count: int


@dataclass
class Histogram:
    bars: list[Bar]
    width: int
    height: int
    max_count: int
    lo: float
    hi: float


def histogram(stats: FeatureStatistics, width: int = 320, height: int = 120) -> Histogram | None:
    """Bar geometry of the activation histogram (log-spaced bins, a sqrt count scale so
    the thin tail stays visible); None when the feature never fired."""
    counts, edges = stats.hist_counts, stats.hist_edges
    if not counts or not any(counts) or len(edges) != len(counts) + 1:
        return None
    top = max(counts)
    step = width / len(counts)
    bars = []
    for i, count in enumerate(counts):
        h = 0.0 if count == 0 else max(1.5, height * math.sqrt(count / top))
        bars.append(
            Bar(
                x=round(i * step, 2),
                y=round(height - h, 2),
                width=round(max(step - 1, 1), 2),
                height=round(h, 2),
                lo=edges[i],
                hi=edges[i + 1],
                count=count,
            )
        )
    return Histogram(bars, width, height, top, edges[0], edges[-1])


def templates() -> Jinja2Templates:
    """The page templates, autoescaped, with the helpers above as filters and globals."""
    found = Jinja2Templates(directory=WEB / "templates")
    env: Any = found.env
    env.filters.update(num=num, pct=pct, token=token)
    env.globals.update(heat=heat, histogram=histogram)
    env.trim_blocks = True
    env.lstrip_blocks = True
    return found
