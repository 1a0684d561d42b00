"""Feature selections: "0:200" (a range), "3,7,9" (a list) or "sample:8" (a seeded sample
of the features that fire in the evidence), as the CLI and the HTTP jobs take them."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureSelection:
    features: list[int]  # the features to explain, in the given order
    silent: list[int]  # listed by number but never fired in the evidence: left out


def select_features(spec: str, alive: list[int], n_features: int) -> FeatureSelection:
    """The features `spec` names that fired in the evidence (`alive`). Raises ValueError
    for a listed index outside 0..n_features-1 or a malformed spec."""
    spec = spec.strip()
    if spec.startswith("sample:"):
        count = int(spec.removeprefix("sample:"))
        return FeatureSelection(sorted(random.Random(0).sample(alive, min(count, len(alive)))), [])
    firing = set(alive)
    if ":" in spec:
        lo, hi = (int(part) if part else None for part in spec.split(":", 1))
        return FeatureSelection([f for f in range(n_features)[lo:hi] if f in firing], [])
    picked = [int(part) for part in spec.split(",") if part.strip()]
    bad = [f for f in picked if not 0 <= f < n_features]
    if bad:
        raise ValueError(f"unknown feature {bad[0]}: valid indices are 0..{n_features - 1}")
    return FeatureSelection(
        [f for f in picked if f in firing], [f for f in picked if f not in firing]
    )
