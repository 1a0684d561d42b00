"""Strength tiers: which parts of a concluded predicate the feature fires on strongly,
and which only weakly. Real features have a core and a periphery; a predicate judge
simulates the two levels, and writes its generative test texts from the core only.

A part is strong when, wherever it holds, the feature likely fires at strength: the
share of its firings that reach the firing threshold (counted on the quantile samples,
which draw firings evenly across strengths; the top examples would flatter it) times,
for a word a list names, the share of the word's occurrences over the whole explain
split the feature fires on (the evidence's token firing table): a word the feature
fires on strongly once in a hundred occurrences writes texts it does not fire on.
Lists are tiered word by word, so one list can give words to both tiers.
When no part is likely to fire at strength, the likeliest (within RELATIVE_RATE of
the best) are the strong tier all the same: a generative text written from them fires
more often than one written from the whole list.

The agent's own tests weigh in: its probe texts are fresh lines where a piece holds,
labelled at the threshold, which is exactly what a generative test writes. Each probed
token of a piece counts as one observation beside the evidence's estimate (worth
EVIDENCE_WEIGHT observations): a word the evidence saw fire strongly once, and that
stayed quiet in three probes, is weak.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from agent.rules.hypotheses import labeled
from agent.rules.synthesis import Labeled, evaluate
from agent.rules.table import TokenTable
from predicates.base import _Listed, normal
from predicates.language import AllOf, AnyOf, Predicate, Tiered, TokenIn, TokenView
from predicates.lexical import DerivedFrom, LemmaIn
from probes.evidence.store import FeatureEvidence, TokenFiring

STRONG_RATE = 0.5  # estimated share of the places a strong part holds that fire at strength
# With no piece at STRONG_RATE, the strong tier is the pieces within this share of the best.
RELATIVE_RATE = 0.5
EVIDENCE_WEIGHT = 2.0  # probe observations the evidence's estimate of a piece is worth


def tiered(
    parts: Sequence[Predicate],
    evidence: FeatureEvidence,
    threshold: float,
    tests: Sequence[Labeled] = (),
) -> Predicate:
    """The parts of an "or" (and the words of its lists) as strength tiers when they
    differ. It fires on the same tokens as the "or"; only the levels it predicts differ.
    `tests`: the agent's probe texts, labelled where they reached `threshold`."""
    examples = [e for b in evidence.quantiles for e in b.examples] or evidence.top
    fired = labeled(examples)
    table = TokenTable.of(fired)  # each distinct token judged once per piece
    at_strength = np.fromiter((a >= threshold > 0 for e in examples for a in e.acts), dtype=bool)
    precision = _Precision(evidence.token_firing or [])
    probed = TokenTable.of(tests) if tests else None
    rated: list[tuple[Predicate, float]] = []
    for part in parts:
        for piece in _pieces(part):
            on = evaluate(piece, fired, table)
            hits, strong_hits = int((on & table.labels).sum()), int((on & at_strength).sum())
            rate = strong_hits / hits * precision(piece) if hits else 0.0
            if probed is not None:
                held = evaluate(piece, tests, probed)
                rate = (EVIDENCE_WEIGHT * rate + (held & probed.labels).sum()) / (
                    EVIDENCE_WEIGHT + held.sum()
                )
            rated.append((piece, rate))
    best = max(rate for _, rate in rated)
    # When no piece is likely to fire at strength, the likeliest are still its core:
    # the judge writes generative texts from them, not from the whole list.
    bar = STRONG_RATE if best >= STRONG_RATE else RELATIVE_RATE * best
    strong = [piece for piece, rate in rated if rate >= bar > 0]
    weak = [piece for piece, rate in rated if not rate >= bar > 0]
    if not strong or not weak:
        return any_of(list(parts))
    return Tiered(strong=any_of(_joined(strong)), weak=any_of(_joined(weak)))


def any_of(parts: list[Predicate]) -> Predicate:
    return parts[0] if len(parts) == 1 else AnyOf(parts=tuple(parts))


def _pieces(part: Predicate) -> list[Predicate]:
    """A list as one single-word list per word, also inside an "and" (each word keeps
    the conditions it is listed with); any other part as itself."""
    field = _word_field(part)
    if field is not None:
        return [part.model_copy(update={field: (w,)}) for w in getattr(part, field)]
    inner = _listed_index(part)
    if isinstance(part, AllOf) and inner is not None:
        return [_replaced(part, inner, piece) for piece in _pieces(part.parts[inner])]
    return [part]


def _joined(pieces: list[Predicate]) -> list[Predicate]:
    """Single-word pieces of the same frame (kind, case, conditions) joined back into
    one list, in order."""
    words: dict[str, list[str]] = defaultdict(list)
    first: dict[str, Predicate] = {}
    out: list[Predicate | str] = []
    for piece in pieces:
        frame = _frame(piece)
        if frame is None:
            out.append(piece)
            continue
        key, listed = frame
        if key not in first:
            first[key] = piece
            out.append(key)
        words[key].extend(listed)
    return [p if not isinstance(p, str) else _with_words(first[p], tuple(words[p])) for p in out]


def _word_field(piece: Predicate) -> str | None:
    """The field that holds a list's words, for the kinds of list tiered word by word."""
    if isinstance(piece, _Listed | DerivedFrom):
        return "words"
    return "lemmas" if isinstance(piece, LemmaIn) else None


def _listed_index(piece: Predicate) -> int | None:
    """In an "and", the index of its one list (None without exactly one)."""
    if not isinstance(piece, AllOf):
        return None
    found = [i for i, p in enumerate(piece.parts) if _word_field(p) is not None]
    return found[0] if len(found) == 1 else None


def _replaced(piece: AllOf, index: int, part: Predicate) -> AllOf:
    parts = (*piece.parts[:index], part, *piece.parts[index + 1 :])
    return piece.model_copy(update={"parts": parts})


def _frame(piece: Predicate) -> tuple[str, tuple[str, ...]] | None:
    """The piece with its words left out (as a key) and its words; None for a piece
    that lists none."""
    words = _listed_words(piece)
    return None if words is None else (_with_words(piece, ()).model_dump_json(), words)


def _listed_words(piece: Predicate) -> tuple[str, ...] | None:
    field = _word_field(piece)
    if field is not None:
        return tuple(getattr(piece, field))
    inner = _listed_index(piece)
    if isinstance(piece, AllOf) and inner is not None:
        return _listed_words(piece.parts[inner])
    return None


def _with_words(piece: Predicate, words: tuple[str, ...]) -> Predicate:
    """The piece listing `words` (unchecked: an empty list only keys a frame)."""
    field = _word_field(piece)
    if field is not None:
        return piece.model_copy(update={field: words})
    inner = _listed_index(piece)
    assert isinstance(piece, AllOf) and inner is not None
    return _replaced(piece, inner, _with_words(piece.parts[inner], words))


class _Precision:
    """P(fires | piece holds) over the whole explain split, from the evidence's firing
    table rows the piece holds on (each row's token read alone, each distinct token
    judged once); 1.0 when it holds on none (the table keeps only each feature's
    most-fired tokens)."""

    def __init__(self, rows: Sequence[TokenFiring]) -> None:
        self.rows = [Labeled(TokenView.of([r.token]), (False,)) for r in rows]
        self.table = TokenTable.of(self.rows)
        self.fires = np.array([r.fires for r in rows], dtype=np.int64)
        self.seen = np.array([r.occurrences for r in rows], dtype=np.int64)

    def __call__(self, piece: Predicate) -> float:
        if not self.rows:
            return 1.0
        on = evaluate(piece, self.rows, self.table)
        seen = int(self.seen[on].sum())
        return int(self.fires[on].sum()) / seen if seen else 1.0


RELIABLE_PRECISION = 0.35  # of a token's occurrences the feature fires on, to add it
RELIABLE_MIN_FIRES = 3
RELIABLE_ADDED = 3  # tokens added at most: a few examples, not a recital


def with_reliable_tokens(predicate: Predicate, evidence: FeatureEvidence) -> Predicate:
    """`predicate` with, in its weak tier, up to RELIABLE_ADDED tokens it misses that
    the feature fires on in many of their occurrences over the whole explain split
    (the evidence's firing table): the sampled contexts a predicate is synthesised from
    hold a few hundred firings; the table counts every one."""
    added: list[str] = []
    for row in evidence.token_firing or []:
        word = normal(row.token)
        reliable = row.occurrences and row.fires / row.occurrences >= RELIABLE_PRECISION
        if not word or word in added or not reliable or row.fires < RELIABLE_MIN_FIRES:
            continue
        if any(predicate.evaluate(TokenView.of([row.token]))):
            continue
        added.append(word)
        if len(added) == RELIABLE_ADDED:
            break
    if not added:
        return predicate
    more = TokenIn(words=tuple(added))
    if isinstance(predicate, Tiered):
        weak = _parts(predicate.weak)
        return predicate.model_copy(update={"weak": any_of(_joined([*weak, more]))})
    return Tiered(strong=predicate, weak=more)


def _parts(predicate: Predicate | None) -> tuple[Predicate, ...]:
    if predicate is None:
        return ()
    return predicate.parts if isinstance(predicate, AnyOf) else (predicate,)
