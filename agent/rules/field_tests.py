"""A semantic field as a hypothesis of its own, tested past its evidence (SAGE's
experiments for a class): "it fires, at least faintly, on words related to X, Y, Z".
Its tests are minimal pairs: a member the evidence never showed put in the place of an
anchor in a context where the feature fired on that anchor (the evidence's own
examples, strongest first; else a pool line that holds an anchor, else one that holds
the member), expected WEAK (the feature should fire on it at some strength), beside a
control with a non-member in the same place (expected to stay quiet there). A field
whose unseen members stay quiet, or whose control fires too, is refuted and left out
of the conclusion; one they confirm is kept, and the conclusion cites those tests.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agent.reasoner import NewExperiment, NewHypothesis
from agent.rules.generalize import shaped_like
from agent.rules.pool_index import PoolIndex
from agent.state import Expect, Experiment, Hypothesis
from lexicon.wordnet import WordNetMissing, wordnet
from predicates.language import TokenIn, TokenView, as_dict, from_dict
from predicates.semantic import SemanticField, content_word, field_scores
from probes.evidence.store import Example

MAX_CHARS = 200
CANDIDATES = 4000  # vocabulary words scored per field at most (a seeded sample)
TESTS = 4  # unseen members tried; one that fires (with a quiet control) confirms
MIN_COUNT = 2  # a pool word seen once may be a typo or a fragment, not a word to test
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


def content_words(pool: Sequence[TokenView]) -> list[str]:
    """The distinct whole content words (lowercased) written at least MIN_COUNT times in
    `pool`, sorted: a token may be a piece of a word ("licting"), never a member."""
    counts = Counter(
        w for view in pool for w in map(content_word, _WORD.findall(view.text)) if w is not None
    )
    return sorted(w for w, n in counts.items() if n >= MIN_COUNT)


_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class Site:
    """A place where the feature fired on one of a field's anchors: a text and the
    span of the anchor in it."""

    text: str
    start: int
    end: int

    def swapped(self, word: str) -> str | None:
        """The text with `word` in the anchor's place (in the anchor's shape); None when
        that makes it longer than MAX_CHARS."""
        original = self.text[self.start : self.end]
        text = self.text[: self.start] + shaped_like(word, original) + self.text[self.end :]
        return text if len(text) <= MAX_CHARS else None


def firing_sites(field: SemanticField, examples: Sequence[Example]) -> list[Site]:
    """One site per example where the feature fired on an anchor of `field`, strongest
    example first, each cut to at most MAX_CHARS around the anchor."""
    anchors = set(field.anchors)
    sites: list[Site] = []
    for example in sorted(examples, key=lambda e: -e.max_act):
        view = TokenView.of(example.tokens)
        for i, act in enumerate(example.acts):
            span = view.words[i]
            if act > 0 and span is not None and content_word(view.word(i)) in anchors:
                sites.append(_cut(view.text, *span))
                break
    return sites


def _cut(text: str, start: int, end: int) -> Site:
    """The text around [start, end), at most MAX_CHARS long, cut at spaces: most of it
    before the word, which is what the model reads it by."""
    left = max(0, start - (MAX_CHARS - (end - start)) * 3 // 4)
    right = min(len(text), left + MAX_CHARS)
    if left > 0:
        space = text.find(" ", left, start)
        left = space + 1 if space >= 0 else left
    if right < len(text):
        space = text.rfind(" ", end, right)
        right = space if space >= 0 else right
    return Site(text[left:right], start - left, end - left)


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
    sites: Sequence[Site],
    pool: Sequence[TokenView],
    index: PoolIndex,
    words: Sequence[str],
    used: set[str],
    rng: random.Random,
    n: int = TESTS,
) -> list[NewExperiment]:
    """Up to `n` WEAK tests, one per unseen member (`words`, in order): the member in an
    anchor's place at one of `sites` (where the feature fired on the anchor: a minimal
    pair in a context it fires in, a different site per member), else in a pool line
    that holds an anchor, else a pool line that holds the member. With the first swap
    goes a control (LOW): the same place with a non-member of the field (a word of its
    contrast), where the feature should stay quiet; a place that fires for any word
    says nothing about the field."""
    places = [s for s in sites if s.text not in used] or _pool_sites(field, pool, index, used)
    out: list[NewExperiment] = []
    control: NewExperiment | None = None
    for word in words:
        site = places[len(out) % len(places)] if places else None
        text = site.swapped(word) if site is not None else None
        if site is None or text is None or text in used:
            text = _natural(word, pool, index, used, rng)
        elif control is None:
            control = _control(site, field, used, rng)
        if text is None:
            continue
        out.append(NewExperiment(text=text, expect=Expect.WEAK, expected_peak=word))
        used.add(text)
        if len(out) == n:
            break
    return out + ([control] if control is not None and out else [])


def _pool_sites(
    field: SemanticField, pool: Sequence[TokenView], index: PoolIndex, used: set[str]
) -> list[Site]:
    """Up to TESTS sites in pool lines that hold an anchor (where the feature may not
    fire: the evidence had no site of its own)."""
    anchors = _anchors(field)
    sites: list[Site] = []
    for line in np.flatnonzero(index.firing(anchors)):
        view = pool[int(line)]
        if len(view.text) > MAX_CHARS or view.text in used:
            continue
        span = view.words[anchors.evaluate(view).index(True)]
        if span is not None:
            sites.append(Site(view.text, *span))
        if len(sites) == TESTS:
            break
    return sites


def _control(
    site: Site, field: SemanticField, used: set[str], rng: random.Random
) -> NewExperiment | None:
    """The site with a non-member of the field (a word of its contrast) in the anchor's
    place, where the feature should stay quiet."""
    other = rng.choice(field.contrast)
    text = site.swapped(other)
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
