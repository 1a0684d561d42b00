"""Floors: what a scorer gives an explainer for saying nothing about the feature. Each
feature is scored, by the same judge on the same examples, with the explanation the same
explainer wrote for another feature of the run (a seeded derangement); an explainer's
score means something only by its distance above that. Chance lines are what a judge
that guesses gets, where that does not depend on the feature."""

from __future__ import annotations

import random

from evals.core import INTRUDER_K, Explained
from evals.scorers.output import DISTRACTORS

FLOOR = "~floor"  # the explainer name of a floor's scores: "agent~floor"
# Balanced accuracy and AUROC of a guess; Pearson correlation of a constant. Generative
# accuracy has none: it is the share of random texts that fire the feature.
CHANCE = {"detection": 0.5, "fuzzing": 0.5, "embedding": 0.5, "simulation": 0.0, "predictive": 0.0}
# Finding one intruder among INTRUDER_K + 1 items by guessing.
CHANCE |= {"intruder": 1 / (INTRUDER_K + 1), "intruder-explained": 1 / (INTRUDER_K + 1)}
# Picking the feature's steered continuations among DISTRACTORS other features' by guessing.
CHANCE["output-pick"] = 1 / (DISTRACTORS + 1)


def partners(features: list[int], seed: int) -> dict[int, int]:
    """Each feature's partner, whose explanation it is scored with: the next one in a
    seeded shuffle of the run's features, so no feature gets its own (none with one)."""
    order = sorted(set(features))
    random.Random(f"floor:{seed}").shuffle(order)
    if len(order) < 2:
        return {}
    return {f: order[(i + 1) % len(order)] for i, f in enumerate(order)}


def floor_name(explainer: str) -> str:
    return explainer + FLOOR


def is_floor(explainer: str) -> bool:
    return explainer.endswith(FLOOR)


def borrowed(explained: Explained, feature: int) -> Explained:
    """Another feature's explanation, to be scored on `feature` as a floor."""
    return explained.model_copy(
        update={"feature": feature, "explainer": floor_name(explained.explainer)}
    )
