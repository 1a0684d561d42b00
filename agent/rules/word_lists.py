"""Word-list candidates fitted to the data: tokens, whole words, word families and
neighbouring tokens, each grown greedily while it raises the token F1. A list is fitted
to the data it is judged on, so it is judged out of fold (a list built on the odd texts
decides the even ones, and the reverse): a list that only recites its examples loses to
the class they come from, while a list of words that recur keeps its score."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agent.rules.table import NONE, Scored, TokenTable
from lexicon.stems import root
from predicates.language import Neighbour, Predicate, TokenIn, WordIn, normal
from predicates.lexical import DerivedFrom, LemmaIn, family

MIN_PRECISION = 0.5  # a word joins a list only if the feature fires on most of it
WORD_COST = 0.01  # F1 each listed word must add: the description-length penalty

Fit = Callable[[np.ndarray], Predicate | None]  # rows to fit on -> the list, if any


def fitted_lists(table: TokenTable) -> list[Scored]:
    """Every list candidate fitted to all of `table`, with its out-of-fold verdicts."""
    fold = table.item % 2
    out: list[Scored] = []
    for fit in _fitters(table):
        whole = fit(np.ones_like(table.labels))
        if whole is None:
            continue
        verdicts = np.zeros_like(table.labels)
        for side in (0, 1):
            fitted = fit(fold != side)  # fitted on the other fold
            if fitted is not None:
                here = fold == side
                verdicts[here] = verdicts_of(fitted, table)[here]
        out.append((whole, verdicts))
    return out


def verdicts_of(predicate: Predicate, table: TokenTable) -> np.ndarray:
    """A fitted list's verdict per labelled token of `table`."""
    found = table.verdicts(predicate)
    if found is None:
        raise TypeError(f"not a fitted list: {predicate!r}")
    return found


def _fitters(table: TokenTable) -> list[Fit]:
    out: list[Fit] = []
    for cs in (False, True):
        out.append(_fit(table, _keys(table.tokens, table.token_id, _normal(cs)), _token_in(cs)))
        out.append(_fit(table, _keys(table.words, table.word_id, _normal(cs)), _word_in(cs)))
    out.append(_fit(table, _keys(table.words, table.word_id, family), _lemma_in))
    out.append(_fit(table, _keys(table.words, table.word_id, _root_word(table.words)), _derived))
    for offset, ids in ((-1, table.prev_id), (1, table.next_id)):
        out.append(_fit(table, _keys(table.tokens, ids, _normal(False)), _neighbours(offset)))
    return out


Make = Callable[[tuple[str, ...]], Predicate]


def _normal(case_sensitive: bool) -> Callable[[str], str]:
    return lambda s: normal(s, case_sensitive)


def _token_in(case_sensitive: bool) -> Make:
    return lambda words: TokenIn(words=words, case_sensitive=case_sensitive)


def _word_in(case_sensitive: bool) -> Make:
    return lambda words: WordIn(words=words, case_sensitive=case_sensitive)


def _lemma_in(lemmas: tuple[str, ...]) -> Predicate:
    return LemmaIn(lemmas=lemmas)


def _derived(words: tuple[str, ...]) -> Predicate:
    return DerivedFrom(words=words)


def _root_word(words: list[str]) -> Callable[[str], str]:
    """A word's key for a derivational family: the shortest word of the data with its
    root, so the list names words ("remark"), not stems ("remark", "decis")."""
    shortest: dict[str, str] = {}
    for word in sorted((w.lower() for w in words if w.isalpha()), key=len, reverse=True):
        shortest[root(word)] = word
    return lambda word: shortest.get(root(word), "") if word.isalpha() else ""


def _neighbours(offset: int) -> Make:
    return lambda words: Neighbour(offset=offset, inner=TokenIn(words=words))


Keys = tuple[list[str], np.ndarray]  # distinct keys, and per labelled token its key (or NONE)


def _keys(strings: list[str], ids: np.ndarray, key: Callable[[str], str]) -> Keys:
    """Each labelled token's key: `key` of the string `ids` points at (blank: NONE)."""
    index: dict[str, int] = {}
    mapped = [index.setdefault(k, len(index)) if (k := key(s)) else NONE for s in strings]
    lookup = np.asarray([*mapped, NONE], dtype=np.int64)  # NONE ids stay NONE
    return list(index), lookup[ids]


def _fit(table: TokenTable, keys: Keys, make: Make) -> Fit:
    names, key_id = keys

    def fit(rows: np.ndarray) -> Predicate | None:
        words = _grown(names, key_id, table.labels, rows)
        return make(words) if words else None

    return fit


def _grown(
    names: list[str], key_id: np.ndarray, labels: np.ndarray, rows: np.ndarray
) -> tuple[str, ...]:
    """Keys grown greedily, most firing first, while each raises the token-level F1 of
    "the key is one of these" by at least WORD_COST (counted on `rows`)."""
    valid = rows & (key_id != NONE)
    seen = np.bincount(key_id[valid], minlength=len(names))
    fired = np.bincount(key_id[valid & labels], minlength=len(names))
    positives = int(labels[rows].sum())
    chosen: list[str] = []
    tp = fp = 0
    best_f1 = 0.0
    for k in sorted(np.nonzero(fired)[0].tolist(), key=lambda k: (-fired[k], names[k])):
        hits, count = int(fired[k]), int(seen[k])
        if hits / count < MIN_PRECISION:
            continue
        f1 = 2 * (tp + hits) / (2 * (tp + hits) + fp + count - hits + positives - tp - hits)
        if f1 < best_f1 + WORD_COST:  # a word must pay for its place in the explanation
            continue
        chosen.append(names[k])
        tp, fp, best_f1 = tp + hits, fp + count - hits, f1
    return tuple(chosen)
