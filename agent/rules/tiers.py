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
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from agent.rules.hypotheses import labeled
from agent.rules.synthesis import evaluate
from agent.rules.table import TokenTable
from predicates.base import _Listed, normal
from predicates.language import AnyOf, Predicate, Tiered, TokenIn, TokenView
from predicates.lexical import LemmaIn
from probes.evidence.store import FeatureEvidence

STRONG_RATE = 0.5  # estimated share of the places a strong part holds that fire at strength


def tiered(parts: Sequence[Predicate], evidence: FeatureEvidence, threshold: float) -> Predicate:
    """The parts of an "or" (and the words of its lists) as strength tiers when they
    differ. It fires on the same tokens as the "or"; only the levels it predicts differ."""
    examples = [e for b in evidence.quantiles for e in b.examples] or evidence.top
    fired = labeled(examples)
    table = TokenTable.of(fired)  # each distinct token judged once per piece
    at_strength = np.fromiter((a >= threshold > 0 for e in examples for a in e.acts), dtype=bool)
    precision = _token_precision(evidence)
    strong: list[Predicate] = []
    weak: list[Predicate] = []
    for part in parts:
        for piece in _pieces(part):
            on = evaluate(piece, fired, table)
            hits, strong_hits = int((on & table.labels).sum()), int((on & at_strength).sum())
            rate = strong_hits / hits * precision.get(_token_key(piece), 1.0) if hits else 0.0
            (strong if rate >= STRONG_RATE else weak).append(piece)
    if not strong or not weak:
        return any_of(list(parts))
    return Tiered(strong=any_of(_joined(strong)), weak=any_of(_joined(weak)))


def any_of(parts: list[Predicate]) -> Predicate:
    return parts[0] if len(parts) == 1 else AnyOf(parts=tuple(parts))


def _pieces(part: Predicate) -> list[Predicate]:
    """A list as one single-word list per word; any other part as itself."""
    if isinstance(part, _Listed):
        return [part.model_copy(update={"words": (w,)}) for w in part.words]
    if isinstance(part, LemmaIn):
        return [part.model_copy(update={"lemmas": (w,)}) for w in part.lemmas]
    return [part]


def _joined(pieces: list[Predicate]) -> list[Predicate]:
    """Single-word lists of the same kind joined back into one list, in order."""
    words: dict[tuple[str, bool], list[str]] = defaultdict(list)
    out: list[Predicate] = []
    for piece in pieces:
        key = _list_kind(piece)
        if key is None or key not in words:
            out.append(piece)
        if key is not None:
            words[key].extend(_words(piece))
    return [p if (k := _list_kind(p)) is None else _with_words(p, tuple(words[k])) for p in out]


def _list_kind(piece: Predicate) -> tuple[str, bool] | None:
    if isinstance(piece, _Listed):
        return piece.kind, piece.case_sensitive
    if isinstance(piece, LemmaIn):
        return piece.kind, False
    return None


def _words(piece: Predicate) -> tuple[str, ...]:
    if isinstance(piece, LemmaIn):
        return piece.lemmas
    return piece.words if isinstance(piece, _Listed) else ()


def _with_words(piece: Predicate, words: tuple[str, ...]) -> Predicate:
    field = "lemmas" if isinstance(piece, LemmaIn) else "words"
    return piece.model_copy(update={field: words})


def _token_key(piece: Predicate) -> str | None:
    """The token a one-token list names, as the firing table is keyed; else None."""
    if isinstance(piece, TokenIn) and not piece.case_sensitive and len(piece.words) == 1:
        return piece.words[0]
    return None


def _token_precision(evidence: FeatureEvidence) -> dict[str | None, float]:
    """P(fires | token) over the whole explain split, per normalised token, for the
    tokens of the evidence's firing table (its forms pooled: " Hard" and "hard")."""
    fires: dict[str | None, int] = defaultdict(int)
    seen: dict[str | None, int] = defaultdict(int)
    for row in evidence.token_firing or []:
        key = normal(row.token)
        fires[key] += row.fires
        seen[key] += row.occurrences
    return {k: fires[k] / seen[k] for k in fires if seen[k]}


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
