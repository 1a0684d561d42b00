"""Label collisions: explanations of different features that say the same thing.
Detection cannot tell such features apart (in one study 82% of 722 labelled features
shared a label with another), so the bench counts them and scores each colliding
explanation against the contexts of the feature it collides with.

Two explanations of one explainer collide when
- both carry a predicate and the predicates are equal, or the things they name (listed
  words, lemmas and examples, patterns, class names) overlap by Jaccard >= `JACCARD`;
- or, for prose, their texts' embeddings (all-MiniLM-L6-v2) have cosine >= `COSINE`.
The predicates' own frame ("Fires on the tokens ...") is shared by every explanation
of an explainer, so predicates are compared by what they name, not by their wording.

Detection against a collision: the feature's held-out activating examples against
held-out contexts where the colliding feature fires and this one does not; an
explanation that only names what both share scores near chance (0.5) there.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evals.core import Explained, ScoringSet
from evals.length import LISTED_FIELDS
from lexicon.embeddings import Embed
from probes.evidence.config import SCORE
from probes.evidence.store import EvidenceStore

JACCARD = 0.5  # half of what either names is shared
COSINE = 0.8  # MiniLM puts paraphrases of one label at 0.75-0.9, unrelated ones near 0
SCORER = "collision-detection"  # the scorer name of detection against a collision
NAMING_FIELDS = frozenset({"pattern", "name", "category", "prefix"})  # a class's name
NAMED_LISTS = LISTED_FIELDS | {"anchors"}  # a semantic field names its anchors


@dataclass(frozen=True)
class Collision:
    explainer: str
    feature: int
    other: int
    why: str  # "same predicate", "names 3 of 4 things alike", "cosine 0.93"


def collisions(explanations: Sequence[Explained], embed: Embed | None = None) -> list[Collision]:
    """Every colliding pair of one explainer's explanations, once each way (so each
    feature lists what it collides with)."""
    by_explainer: dict[str, list[Explained]] = defaultdict(list)
    for e in explanations:
        by_explainer[e.explainer].append(e)
    out: list[Collision] = []
    for mine in by_explainer.values():
        prose = [e for e in mine if e.predicate is None]
        vectors = (
            dict(zip((e.feature for e in prose), embed([e.text for e in prose]), strict=True))
            if embed and prose
            else {}
        )
        for a, b in itertools.combinations(sorted(mine, key=lambda e: e.feature), 2):
            why = _collide(a, b, vectors)
            if why is not None:
                out += [Collision(a.explainer, a.feature, b.feature, why)]
                out += [Collision(a.explainer, b.feature, a.feature, why)]
    return out


def _collide(a: Explained, b: Explained, vectors: dict[int, np.ndarray]) -> str | None:
    if a.predicate is not None and b.predicate is not None:
        if a.predicate == b.predicate:
            return "same predicate"
        x, y = named(a.predicate), named(b.predicate)
        shared = len(x & y)
        if x and y and shared / len(x | y) >= JACCARD:
            return f"name {shared} of {len(x | y)} things alike"
        return None
    if a.feature in vectors and b.feature in vectors:
        cosine = float(vectors[a.feature] @ vectors[b.feature])
        return f"cosine {cosine:.2f}" if cosine >= COSINE else None
    return None


def named(predicate: dict[str, Any]) -> frozenset[str]:
    """What a predicate names: its listed items and its classes' names, lowercased."""
    return frozenset(_named(predicate))


def _named(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, v in value.items():
            if key in NAMED_LISTS and isinstance(v, list | tuple):
                yield from (str(item).lower() for item in v)
            elif key in NAMING_FIELDS and isinstance(v, str):
                yield f"{key}:{v.lower()}"
            else:
                yield from _named(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _named(v)


def against_collision(
    examples: ScoringSet, store: EvidenceStore, others: list[int], n: int, split: int = SCORE
) -> ScoringSet | None:
    """The feature's scoring set with its negatives replaced by up to `n` held-out
    contexts where one of `others` fires and it does not (None when there are none)."""
    quiet = store.quiet_contexts(examples.feature, split)
    theirs = quiet[np.isin(quiet.numpy(), store.pool_firing(others).numpy())][:n]
    if not len(theirs) or not examples.activating:
        return None
    negatives = [store.quiet_example(int(c)) for c in theirs]
    return examples.model_copy(
        update={"non_activating": negatives, "hard_negatives": [], "hard_kind": []}
    )
