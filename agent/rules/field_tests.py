"""A semantic field as a hypothesis of its own, tested past its evidence (SAGE's
experiments for a class): "it fires, at least faintly, on words related to X, Y, Z".
Its tests are retrieved lines holding a field member the evidence never showed
(expected WEAK: the feature should fire on it at some strength). A field whose unseen
members stay quiet is refuted and left out of the conclusion; one they confirm is kept,
and the conclusion cites those tests.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from agent.reasoner import NewExperiment, NewHypothesis
from agent.rules.pool_index import PoolIndex
from agent.state import Expect, Experiment, Hypothesis
from predicates.language import TokenIn, TokenView, as_dict, from_dict
from predicates.semantic import SemanticField, content_word, field_scores

MAX_CHARS = 200
CANDIDATES = 4000  # vocabulary words scored per field at most (a seeded sample)
TESTS = 2


def field_hypothesis(field: SemanticField) -> NewHypothesis:
    return NewHypothesis(
        statement=f"Fires, at least faintly, on {field.describe()}.",
        fires_on=field.describe(),
        not_on="words far from them",
        predicate=as_dict(field),
    )


def field_of(hypothesis: Hypothesis) -> SemanticField | None:
    """The field a field hypothesis claims; None for any other hypothesis."""
    if hypothesis.predicate is None or hypothesis.predicate.get("kind") != "semantic_field":
        return None
    found = from_dict(hypothesis.predicate)
    return found if isinstance(found, SemanticField) else None


def content_words(vocabulary: Sequence[str]) -> list[str]:
    """The distinct content words (lowercased) of `vocabulary`, sorted."""
    return sorted({w for w in map(content_word, vocabulary) if w is not None})


def unseen_member_words(
    field: SemanticField, words: Sequence[str], seen: set[str], rng: random.Random
) -> list[str]:
    """Content `words` inside the field that the evidence never showed (`seen`, and the
    field's own lists), closest first: the core is what a field claims most surely (its
    margin is set on whole contexts, where the words of a topic help too)."""
    known = seen | set(field.anchors) | set(field.contrast)
    fresh = [w for w in words if w not in known]
    if len(fresh) > CANDIDATES:
        fresh = rng.sample(fresh, CANDIDATES)
    if not fresh:
        return []
    scores = field_scores(field, fresh)
    return [fresh[i] for i in np.argsort(-scores, kind="stable") if scores[i] > field.margin]


def unseen_field_tests(
    field: SemanticField,
    pool: Sequence[TokenView],
    index: PoolIndex,
    words: Sequence[str],
    used: set[str],
    rng: random.Random,
    n: int = TESTS,
) -> list[NewExperiment]:
    """Up to `n` WEAK tests, one per unseen member: a pool line holding the word."""
    out: list[NewExperiment] = []
    for word in words:
        lines = [int(i) for i in np.flatnonzero(index.firing(TokenIn(words=(word,))))]
        fitting = [i for i in lines if len(pool[i].text) <= MAX_CHARS]
        fitting = [i for i in fitting if pool[i].text not in used]
        if not fitting:
            continue
        view = pool[rng.choice(fitting)]
        peak = next((t for t in view.tokens if t.strip().lower() == word), None)
        out.append(NewExperiment(text=view.text, expect=Expect.WEAK, expected_peak=peak))
        used.add(view.text)
        if len(out) == n:
            break
    return out


def weak_agrees(field: SemanticField, experiment: Experiment) -> bool:
    """A WEAK test agrees when the feature fires, at any strength, on the unseen member
    it tests (its expected peak token; without one, any token the field holds for)."""
    outcome = experiment.outcome
    if outcome is None:
        return False
    if experiment.expected_peak is not None:
        tested = [t == experiment.expected_peak for t in outcome.tokens]
    else:
        tested = field.evaluate(TokenView.of(outcome.tokens))
    return any(on and a > 0 for on, a in zip(tested, outcome.acts, strict=True))
