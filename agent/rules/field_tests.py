"""A semantic field as a hypothesis of its own, tested past its evidence (SAGE's
experiments for a class): "it fires, at least faintly, on words related to X, Y, Z".
Its tests are minimal pairs: a member the evidence never showed in an anchor's place in
a pool line the feature fires in (else a line that holds the member), expected WEAK (the
feature should fire on it at some strength), beside a control with a non-member in the
same place (expected to stay quiet there). A field whose unseen members stay quiet, or
whose control fires too, is refuted and left out of the conclusion; one they confirm is
kept, and the conclusion cites those tests.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from agent.reasoner import NewExperiment, NewHypothesis
from agent.rules.generalize import shaped_like
from agent.rules.pool_index import PoolIndex
from agent.state import Expect, Experiment, Hypothesis
from lexicon.wordnet import WordNetMissing, wordnet
from predicates.language import TokenIn, TokenView, as_dict, from_dict
from predicates.semantic import SemanticField, content_word, field_scores

MAX_CHARS = 200
CANDIDATES = 4000  # vocabulary words scored per field at most (a seeded sample)
TESTS = 2
SISTERS_OF = 10  # first anchors whose WordNet sister terms are candidates, and swapped out


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
    """Words inside the field that the evidence never showed (`seen`, and the field's
    own lists), closest first: content `words` (the pool's) and the WordNet sister terms
    of its first anchors ("hail" beside "rain"). The core is what a field claims most
    surely (its margin is set on whole contexts, where the words of a topic help too)."""
    known = seen | set(field.anchors) | set(field.contrast)
    candidates = set(words) | _sister_terms(field.anchors[:SISTERS_OF])
    fresh = sorted(w for w in candidates if w not in known and content_word(w) == w)
    if len(fresh) > CANDIDATES:
        fresh = rng.sample(fresh, CANDIDATES)
    if not fresh:
        return []
    scores = field_scores(field, fresh)
    return [fresh[i] for i in np.argsort(-scores, kind="stable") if scores[i] > field.margin]


def _sister_terms(anchors: Sequence[str]) -> set[str]:
    try:
        wn = wordnet()
    except WordNetMissing:
        return set()  # the pool's words alone
    return {w for anchor in anchors for w in wn.sister_terms(anchor)}


def unseen_field_tests(
    field: SemanticField,
    pool: Sequence[TokenView],
    index: PoolIndex,
    words: Sequence[str],
    used: set[str],
    rng: random.Random,
    n: int = TESTS,
) -> list[NewExperiment]:
    """Up to `n` WEAK tests, one per unseen member (`words`, in order): a pool line
    where an anchor stands, with the anchor swapped for the member (a minimal pair in a
    context the feature fires in), else a pool line that holds the member. With the
    first swap goes a control (LOW): the same line with a non-member of the field (a
    word of its contrast) in that place, where the feature should stay quiet; a slot
    that fires for any word says nothing about the field."""
    anchor_lines = _short([int(i) for i in np.flatnonzero(index.firing(_anchors(field)))], pool)
    out: list[NewExperiment] = []
    control: NewExperiment | None = None
    for word in words:
        line = _unused_line(pool, anchor_lines, used, rng)
        text = _swap(pool[line], field, word) if line is not None else None
        if line is None or text is None or text in used:
            text = _natural(word, pool, index, used, rng)
        elif control is None:
            control = _control(pool[line], field, used, rng)
        if text is None:
            continue
        out.append(NewExperiment(text=text, expect=Expect.WEAK, expected_peak=word))
        used.add(text)
        if len(out) == n:
            break
    return out + ([control] if control is not None and out else [])


def _control(
    view: TokenView, field: SemanticField, used: set[str], rng: random.Random
) -> NewExperiment | None:
    """The line with a non-member of the field (a word of its contrast) in the anchor's
    place, where the feature should stay quiet."""
    other = rng.choice(field.contrast)
    text = _swap(view, field, other)
    if text is None or text in used:
        return None
    used.add(text)
    return NewExperiment(text=text, expect=Expect.LOW, expected_peak=other)


def _anchors(field: SemanticField) -> TokenIn:
    return TokenIn(words=field.anchors[:SISTERS_OF])


def _short(lines: list[int], pool: Sequence[TokenView]) -> list[int]:
    return [i for i in lines if len(pool[i].text) <= MAX_CHARS]


def _unused_line(
    pool: Sequence[TokenView], lines: list[int], used: set[str], rng: random.Random
) -> int | None:
    fitting = [i for i in lines if pool[i].text not in used]
    return rng.choice(fitting) if fitting else None


def _swap(view: TokenView, field: SemanticField, word: str) -> str | None:
    """The line with its first anchor token swapped for `word` (same case and spacing);
    None when that makes it too long."""
    at = _anchors(field).evaluate(view).index(True)
    original = view.tokens[at]
    lead = original[: len(original) - len(original.lstrip())]
    tokens = [*view.tokens[:at], lead + shaped_like(word, original.strip()), *view.tokens[at + 1 :]]
    text = "".join(tokens)
    return text if len(text) <= MAX_CHARS else None


def _natural(
    word: str, pool: Sequence[TokenView], index: PoolIndex, used: set[str], rng: random.Random
) -> str | None:
    """A pool line that holds `word` as a token."""
    lines = _short([int(i) for i in np.flatnonzero(index.firing(TokenIn(words=(word,))))], pool)
    line = _unused_line(pool, lines, used, rng)
    return pool[line].text if line is not None else None


def fires_on_tested_word(field: SemanticField, experiment: Experiment) -> bool:
    """Whether the feature fired, at any strength, on the word a test put in (its
    expected peak; without one, on any token the field holds for)."""
    outcome = experiment.outcome
    if outcome is None:
        return False
    if experiment.expected_peak is not None:
        return outcome.fires_on(experiment.expected_peak)
    held = field.evaluate(TokenView.of(outcome.tokens))
    return any(on and a > 0 for on, a in zip(held, outcome.acts, strict=True))


def field_test_agrees(field: SemanticField, experiment: Experiment) -> bool:
    """A member's test (WEAK) agrees when the feature fired on the member; a control
    (LOW), when it stayed quiet on the non-member."""
    fired = fires_on_tested_word(field, experiment)
    return fired if experiment.expect is Expect.WEAK else not fired
