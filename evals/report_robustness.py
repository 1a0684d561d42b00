"""The report's sections on how far a score can be trusted: hard negatives (detection
and fuzzing against contexts that look like the feature's, evals.hard_negatives) and
label collisions (explanations that say what another feature's say, evals.collisions)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pydantic import BaseModel

from evals.collisions import SCORER as COLLISION_SCORER
from evals.core import Score

HARD_SCORERS = ("detection", "fuzzing")  # the scorers that show hard negatives
HARD_COLUMNS = ("random", "hard", "random_specificity", "tokens", "similar")


def hard_row(scores: dict[int, Score]) -> dict[str, float | None]:
    """Means over the features scored against hard negatives (None: none were)."""
    values: dict[str, list[float]] = defaultdict(list)
    for s in scores.values():
        details = s.details
        if s.score is None or details.get("hard_negative_accuracy") is None:
            continue
        values["random"].append(s.score)
        values["hard"].append(details["hard_negative_accuracy"])
        values["random_specificity"].append(details["random_specificity"])
        for kind, specificity in details["hard_specificity"].items():
            values[kind].append(specificity)
    return {k: float(np.mean(values[k])) if values[k] else None for k in HARD_COLUMNS}


HARD_TEXT = (
    "Balanced accuracy with the same activating examples against random quiet contexts "
    "and against hard negatives (held-out contexts holding one of the feature's most-fired "
    "tokens, or where a feature with a near decoder row fires, and it does not), and the "
    "share of each kind of negative the judge rightly rejected. Fuzzing shows each hard "
    "negative highlighted on the feature's firing tokens (random tokens when it holds none)."
)


def hard_table(explainers: list[str], hard: dict[str, dict[str, dict[str, float | None]]]) -> str:
    """`hard`: scorer -> explainer -> `hard_row`."""
    head = (
        "| explainer | scorer | random negatives | hard negatives | difference "
        "| rejected: random | rejected: same tokens | rejected: similar features |"
    )
    lines = [head, "| --- |" + " --- |" * 7]
    for scorer, rows in hard.items():
        for e in explainers:
            row = rows.get(e, {})
            random, found = row.get("random"), row.get("hard")
            if random is None and found is None:
                continue
            difference = None if random is None or found is None else found - random
            cells = [random, found, difference, *(row.get(k) for k in HARD_COLUMNS[2:])]
            lines.append(f"| {e} | {scorer} | " + " | ".join(decimal(c) for c in cells) + " |")
    return "\n".join(lines)


class CollisionRow(BaseModel):
    """One explainer's label collisions: how many of its explanations collide with
    another feature's, and detection of those features against the colliding features'
    contexts beside their detection against random ones."""

    explanations: int
    colliding: int
    against_collision: float | None  # mean detection against the colliding contexts
    against_random: float | None  # mean detection of the same features, random negatives


def collision_row(
    explanations: int, collided: dict[int, Score], detection: dict[int, Score]
) -> CollisionRow:
    scored = {f: s.score for f, s in collided.items() if s.score is not None}
    random = [s.score for f, s in detection.items() if f in scored and s.score is not None]
    return CollisionRow(
        explanations=explanations,
        colliding=len(collided),
        against_collision=float(np.mean(list(scored.values()))) if scored else None,
        against_random=float(np.mean(random)) if random else None,
    )


COLLISION_TEXT = (
    "Explanations that say what another feature's explanation (same explainer, this run) "
    "says: the same predicate, predicates naming mostly the same things (Jaccard >= 0.5), "
    "or prose with MiniLM cosine >= 0.8. Each colliding explanation is scored by detection "
    f"(`{COLLISION_SCORER}` in the results) with its feature's activating examples against "
    "held-out contexts where the colliding features fire and it does not; 0.5 is chance."
)


def collision_table(explainers: list[str], rows: dict[str, CollisionRow]) -> str:
    lines = [
        "| explainer | colliding explanations | detection vs colliding features "
        "| same features vs random |",
        "| --- | --- | --- | --- |",
    ]
    for e in explainers:
        row = rows.get(e)
        if row is None:
            continue
        share = f"{row.colliding} of {row.explanations}"
        cells = [share, decimal(row.against_collision), decimal(row.against_random)]
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def decimal(value: float | None) -> str:
    """A table cell: three decimals, or a dash for nothing."""
    return "–" if value is None else f"{value:.3f}"
