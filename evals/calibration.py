"""Calibration: an explainer's stated confidence against the score its explanation
earns on held-out examples. Expected calibration error over equal-width confidence bins
(Naeini et al. 2015; Guo et al. 2017): the count-weighted mean gap between a bin's mean
confidence and its mean score; 0 is perfectly calibrated. The bins are the points of a
reliability plot."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

BINS = 10


class CalibrationBin(BaseModel):
    lo: float
    hi: float
    n: int
    confidence: float  # mean stated confidence in the bin
    score: float  # mean held-out score in the bin


class Calibration(BaseModel):
    n: int
    ece: float
    bins: list[CalibrationBin]  # the non-empty ones, lowest first


def calibration(pairs: Sequence[tuple[float, float]], bins: int = BINS) -> Calibration | None:
    """(stated confidence, held-out score) per feature, both in [0, 1]: its calibration,
    or None without any pair."""
    if not pairs:
        return None
    confidence = np.clip(np.array([c for c, _ in pairs], dtype=float), 0.0, 1.0)
    score = np.array([s for _, s in pairs], dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin b holds [b/bins, (b+1)/bins); rounding first keeps 0.3 out of the bin below it.
    index = np.minimum(np.floor(np.round(confidence * bins, 9)).astype(int), bins - 1)
    out: list[CalibrationBin] = []
    gap = 0.0
    for b in range(bins):
        inside = index == b
        if not inside.any():
            continue
        mean_c, mean_s = float(confidence[inside].mean()), float(score[inside].mean())
        gap += int(inside.sum()) * abs(mean_c - mean_s)
        out.append(
            CalibrationBin(
                lo=float(edges[b]), hi=float(edges[b + 1]), n=int(inside.sum()),
                confidence=mean_c, score=mean_s,
            )
        )  # fmt: skip
    return Calibration(n=len(pairs), ece=gap / len(pairs), bins=out)
