"""Experiments that test a hypothesis past its evidence (as SAGE does): a text where the
hypothesis fires, with its firing word swapped for a member of the same class (or
another form of the same word) that the evidence never showed. A class that only
recites its evidence fails these; one that names the concept passes."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np
from lemminflect import getAllInflections, getInflection

from agent.reasoner import NewExperiment
from agent.state import Expect
from predicates.language import AllOf, AnyOf, Predicate, Tiered, TokenView
from predicates.lexical import LemmaIn, WordClass

MAX_CHARS = 200
MAX_CANDIDATES = 400  # members tried per hypothesis (a lexname holds thousands)


def generalizing_parts(predicate: Predicate) -> Iterator[WordClass | LemmaIn]:
    """The parts of `predicate` that claim more than a list of seen words."""
    if isinstance(predicate, WordClass | LemmaIn):
        yield predicate
    elif isinstance(predicate, AnyOf | AllOf):
        for part in predicate.parts:
            yield from generalizing_parts(part)
    elif isinstance(predicate, Tiered):
        for tier in predicate.tiers:
            yield from generalizing_parts(tier)


def unseen_words(part: WordClass | LemmaIn, seen: set[str], common: set[str]) -> list[str]:
    """Members of `part` the evidence never showed (`seen`, lowercased), common words
    first (those in `common`, e.g. whole tokens of the model's vocabulary) so the
    subject model knows them; sorted for a seeded pick."""
    if isinstance(part, WordClass):
        members = part.members()
    else:
        members = {f.lower() for lemma in part.lemmas for f in _forms(lemma)}
    fresh = sorted(w for w in members if w not in seen and w.isalpha() and 3 <= len(w) <= 12)
    known = [w for w in fresh if w in common]
    return (known or fresh)[:MAX_CANDIDATES]


def unseen_member_tests(
    predicate: Predicate,
    pool: Sequence[TokenView],
    firing: np.ndarray,
    seen: set[str],
    common: set[str],
    used: set[str],
    rng: random.Random,
    n: int = 1,
) -> list[NewExperiment]:
    """Up to `n` HIGH tests: pool texts the predicate fires on (`firing`, per line), the
    first firing word replaced by an unseen member that the predicate still fires on."""
    parts = list(generalizing_parts(predicate))
    if not parts:
        return []
    words = unseen_words(rng.choice(parts), seen, common)
    if not words:
        return []
    order = [int(i) for i in np.flatnonzero(firing)]
    rng.shuffle(order)
    out: list[NewExperiment] = []
    for i in order[:200]:
        view = pool[i]
        fires = predicate.evaluate(view)
        if not any(fires):
            continue
        span = view.words[fires.index(True)]
        if span is None:
            continue
        original = view.text[span[0] : span[1]]
        form = shaped_like(rng.choice(words), original)
        swapped = TokenView.of([view.text[: span[0]], form, view.text[span[1] :]])
        if len(swapped.text) > MAX_CHARS or swapped.text in used:
            continue
        if predicate.evaluate(swapped)[1]:
            out.append(NewExperiment(text=swapped.text, expect=Expect.HIGH, expected_peak=form))
            used.add(swapped.text)
            if len(out) == n:
                break
    return out


def _forms(lemma: str) -> set[str]:
    return {lemma, *(f for forms in getAllInflections(lemma).values() for f in forms)}


def shaped_like(word: str, original: str) -> str:
    """`word` in the shape of `original`: plural when it ends in s, capitalised when it
    is (a rough match; the predicate is checked on the result anyway)."""
    if original.lower().endswith("s") and not word.endswith("s"):
        plural = getInflection(word, "NNS")
        word = plural[0] if plural else word
    if original.isupper() and len(original) > 1:
        return word.upper()
    return word.capitalize() if original[:1].isupper() else word
