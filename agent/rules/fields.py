"""Widen a concluded predicate by the semantic field of the words the feature fires on
(predicates.semantic), when that predicts the feature better on its own evidence.

Real features fire on many words the sampled evidence never shows (a gift feature on
"reward", "birthday", "guest"); a list cannot name them, a field can. The field's
anchors are the content words the feature fires on in its top and quantile examples;
its contrast, the content words of the contexts where it stays quiet. Its margin is the
one (of a few) that best separates the quantile examples from quiet contexts its
contrast was not taken from (half of them are kept aside for this), each
context judged fired when the predicate or the field holds anywhere in it, each word
judged without itself as a neighbour (as a word never seen would be). It is kept only
when that separation gains at least MIN_GAIN over the predicate alone, and it goes to
the faint tier: it predicts where the feature fires, not how strongly. The agent then
tests it on members the evidence never showed (agent.rules.field_tests) before it
claims it.

Measured on real default-SAE features (40 per sample, held-out detection of the agent,
predicate judge): 0.708 -> 0.754 on seed 1, 0.765 -> 0.767 on seed 2.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

from predicates.language import Predicate, Tiered, TokenView
from predicates.semantic import SemanticField, content_word, field_scores
from probes.evidence.store import Example, FeatureEvidence

# Narrowest first: ties keep it narrow (most fields chose 0.1 when that was the narrowest).
MARGINS = (0.2, 0.15, 0.1, 0.05, 0.0, -0.05, -0.1, -0.15, -0.2)
# Balanced accuracy on the evidence a field must add to be proposed (its unseen members
# then decide whether it is claimed).
MIN_GAIN = 0.01
MIN_ANCHORS = 3
MAX_ANCHORS = 80  # the most frequent firing words (a field needs its core, not its tail)


def with_field(predicate: Predicate, evidence: FeatureEvidence) -> Predicate:
    """`predicate`, or `predicate` with a semantic field in its faint tier (see module)."""
    positives = [e for b in evidence.quantiles for e in b.examples]
    # The contrast comes from half of the quiet contexts and the field is judged on the
    # other half: judged on the contexts its contrast was taken from, a field that
    # holds for any word far from them looked quiet there and nowhere else.
    fit, judged = evidence.non_activating[0::2], evidence.non_activating[1::2]
    anchors = _anchors(positives + evidence.top)
    contrast = _contrast(fit, anchors)
    if len(anchors) < MIN_ANCHORS or not contrast or not positives or not judged:
        return predicate
    field = SemanticField(anchors=tuple(anchors), contrast=tuple(contrast), margin=0.0)
    said = [_fires(predicate, e) for e in positives + judged]
    closeness = _closeness(field, [sorted(set(_words(e))) for e in positives + judged])
    truth = np.array([True] * len(positives) + [False] * len(judged))

    def accuracy(margin: float | None) -> float:
        predicted = np.array(said) | (closeness > margin if margin is not None else False)
        return float(predicted[truth].mean() + 1 - predicted[~truth].mean()) / 2

    best = max(MARGINS, key=accuracy)
    if accuracy(best) < accuracy(None) + MIN_GAIN:
        return predicate
    everywhere = _contrast(evidence.non_activating, anchors)  # all it knows of quiet text
    field = field.model_copy(update={"margin": best, "contrast": tuple(everywhere)})
    return with_faint(predicate, field)


def with_faint(predicate: Predicate, field: SemanticField) -> Predicate:
    """`predicate` with `field` as its faint tier."""
    if isinstance(predicate, Tiered):
        return predicate.model_copy(update={"faint": field})
    return Tiered(strong=predicate, faint=field)


def _contrast(quiet: list[Example], anchors: list[str]) -> list[str]:
    return sorted({w for e in quiet for w in _words(e)} - set(anchors))


def _anchors(examples: list[Example]) -> list[str]:
    """The content words the feature fires on, most frequent first (the few an
    explanation names are then its typical words)."""
    counts = Counter(w for e in examples for w in _words(e, firing=True))
    return [w for w, _ in counts.most_common(MAX_ANCHORS)]


def _words(example: Example, firing: bool | None = None) -> Iterable[str]:
    """Content words of the example's own tokens (those where the feature fired, with
    `firing`), lowercased."""
    view = TokenView.of(example.before + example.tokens)
    start = len(example.before)
    for i in range(start, len(view.tokens)):
        if firing and not (example.acts and example.acts[i - start] > 0):
            continue
        word = content_word(view.word(i))
        if word is not None:
            yield word


def _fires(predicate: Predicate, example: Example) -> bool:
    view = TokenView.of(example.before + example.tokens)
    return any(predicate.evaluate(view)[len(example.before) :])


def _closeness(field: SemanticField, per_example: list[list[str]]) -> np.ndarray:
    """Per example (its content words), the field score of its closest word (left out
    of the field's own lists), or -inf without one."""
    vocabulary = sorted({w for words in per_example for w in words})
    scores = dict(zip(vocabulary, field_scores(field, vocabulary, leave_out=True), strict=True))
    return np.array([max((scores[w] for w in words), default=-np.inf) for words in per_example])
