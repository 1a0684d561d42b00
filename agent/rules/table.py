"""The labelled tokens of a data set, by distinct text: synthesis evaluates a predicate
that reads one token (or one word) once per distinct token (word) and spreads the
verdicts with numpy, instead of once per token in Python. A corpus repeats its tokens,
so this is most of synthesis's speed."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from predicates.base import _Keyed, _Listed, _TokenLocal, _WordLocal, normal, remembered

if TYPE_CHECKING:
    from agent.rules.synthesis import Labeled
    from predicates.language import Predicate

NONE = -1  # no word here / no neighbour there
DISTINCT_KEPT = 512  # local predicates whose verdicts a table remembers (oldest dropped first)
# Verdicts per labelled token for a predicate the table cannot judge by itself.
Fallback = Callable[[object], "np.ndarray | None"]


@dataclass(frozen=True)
class TokenTable:
    tokens: list[str]  # distinct token texts
    words: list[str]  # distinct word texts
    token_id: np.ndarray  # per labelled token, into `tokens`
    word_id: np.ndarray  # per labelled token, into `words` (NONE: not part of a word)
    prev_id: np.ndarray  # the token before, into `tokens` (NONE at a text's start)
    next_id: np.ndarray  # the token after
    prev_word_id: np.ndarray  # the word of the token before, into `words` (or NONE)
    next_word_id: np.ndarray  # the word of the token after
    item: np.ndarray  # per labelled token, the index of its text in the data
    labels: np.ndarray  # per labelled token, whether the feature fired
    whole_texts: bool  # every token of every text is labelled (no context-only tokens)
    _forms: dict[tuple[bool, bool], list[str]] = field(default_factory=dict, repr=False)
    _keys: dict[Hashable, _WordKeys] = field(default_factory=dict, repr=False)
    # Verdicts per distinct token or word of the local predicates judged before: a
    # long-lived table (the retrieval pool's) sees the same classes feature after feature.
    _distinct: dict[object, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, data: Sequence[Labeled]) -> TokenTable:
        token_index: dict[str, int] = {}
        word_index: dict[str, int] = {}
        token_id, word_id, prev_id, next_id, item, labels = [], [], [], [], [], []
        prev_word, next_word = [], []
        for n, entry in enumerate(data):
            view = entry.view
            ids = [_id(token_index, t) for t in view.tokens]
            words = [
                NONE if w is None else _id(word_index, w) for w in map(view.word, range(len(ids)))
            ]
            for i, label in enumerate(entry.labels, start=entry.offset):
                token_id.append(ids[i])
                word_id.append(words[i])
                prev_id.append(ids[i - 1] if i > 0 else NONE)
                next_id.append(ids[i + 1] if i + 1 < len(ids) else NONE)
                prev_word.append(words[i - 1] if i > 0 else NONE)
                next_word.append(words[i + 1] if i + 1 < len(ids) else NONE)
                item.append(n)
                labels.append(label)
        return cls(
            tokens=list(token_index),
            words=list(word_index),
            token_id=np.asarray(token_id, dtype=np.int64),
            word_id=np.asarray(word_id, dtype=np.int64),
            prev_id=np.asarray(prev_id, dtype=np.int64),
            next_id=np.asarray(next_id, dtype=np.int64),
            prev_word_id=np.asarray(prev_word, dtype=np.int64),
            next_word_id=np.asarray(next_word, dtype=np.int64),
            item=np.asarray(item, dtype=np.int64),
            labels=np.asarray(labels, dtype=bool),
            whole_texts=all(e.offset == 0 and len(e.labels) == len(e.view.tokens) for e in data),
        )

    def verdicts(self, predicate: object, other: Fallback | None = None) -> np.ndarray | None:
        """The predicate's verdict per labelled token when it reads a token or a word
        alone, or the token or word right next to it, or combines such predicates; for
        any other predicate `other`'s answer (None without one: evaluate it text by
        text)."""
        from predicates.language import AllOf, AnyOf, Neighbour, Not, Tiered

        if isinstance(predicate, _TokenLocal | _WordLocal):
            return self._local(predicate, before=None)
        if isinstance(predicate, Neighbour) and predicate.offset in (-1, 1):
            found = self._neighbour(predicate.inner, predicate.offset == -1, other)
            return found if found is not None or other is None else other(predicate)
        if isinstance(predicate, Not):
            inner = self.verdicts(predicate.inner, other)
            return None if inner is None else ~inner
        parts = (
            predicate.tiers
            if isinstance(predicate, Tiered)
            else predicate.parts
            if isinstance(predicate, AnyOf | AllOf)
            else None
        )
        if parts is None:
            return None if other is None else other(predicate)
        each = [self.verdicts(p, other) for p in parts]
        arrays = [f for f in each if f is not None]
        if len(arrays) < len(each):
            return None
        combine = np.logical_and if isinstance(predicate, AllOf) else np.logical_or
        return np.asarray(combine.reduce(arrays), dtype=bool)

    def _neighbour(self, inner: object, before: bool, other: Fallback | None) -> np.ndarray | None:
        if isinstance(inner, _TokenLocal | _WordLocal):
            return self._local(inner, before)
        if not self.whole_texts:  # a neighbour may be a context-only token, never judged
            return None
        found = self.verdicts(inner, other)
        if found is None:
            return None
        # Whole texts lie flat one after another: a token's neighbour is the next row,
        # unless the text ends there.
        shifted = np.zeros_like(found)
        if before:
            shifted[1:] = found[:-1]
            shifted[self.prev_id == NONE] = False
        else:
            shifted[:-1] = found[1:]
            shifted[self.next_id == NONE] = False
        return shifted

    def _local(self, predicate: _TokenLocal | _WordLocal, before: bool | None) -> np.ndarray:
        """A token- or word-local predicate's verdicts, at each token or (`before` set)
        at the one before or after it. A list is judged by set membership of each
        distinct text's normal form, a keyed predicate by membership of each distinct
        word's keys (computed once per table); anything else once per distinct text."""
        by_token = isinstance(predicate, _TokenLocal)
        if by_token:
            ids = self.token_id if before is None else self.prev_id if before else self.next_id
        else:
            ids = (
                self.word_id
                if before is None
                else self.prev_word_id
                if before
                else self.next_word_id
            )
        distinct = self._distinct.get(predicate)
        if distinct is None:
            distinct = self._distinct[predicate] = self._judged(predicate, by_token)
            while len(self._distinct) > DISTINCT_KEPT:
                self._distinct.pop(next(iter(self._distinct)))
        return _spread_array(distinct, ids)

    def _judged(self, predicate: _TokenLocal | _WordLocal, by_token: bool) -> np.ndarray:
        """A local predicate's verdict on each distinct token (or word)."""
        if isinstance(predicate, _Listed):
            forms = self._normal_forms(by_token, predicate.case_sensitive)
            wanted = predicate._set
            return np.fromiter((f in wanted for f in forms), bool, len(forms))
        if isinstance(predicate, _Keyed):
            return self._word_keys(predicate).holding(predicate.wanted())
        if by_token:
            assert isinstance(predicate, _TokenLocal)
            holds = remembered(predicate, predicate.holds_for_token)
            return np.fromiter(map(holds, self.tokens), bool, len(self.tokens))
        assert isinstance(predicate, _WordLocal)
        holds = remembered(predicate, predicate.holds_for_word)
        return np.fromiter(map(holds, self.words), bool, len(self.words))

    def _word_keys(self, predicate: _Keyed) -> _WordKeys:
        kind = predicate.key_kind()
        keys = self._keys.get(kind)
        if keys is None:
            keys = self._keys[kind] = _WordKeys.of(self.words, predicate)
        return keys

    def _normal_forms(self, tokens: bool, case_sensitive: bool) -> list[str]:
        key = (tokens, case_sensitive)
        forms = self._forms.get(key)
        if forms is None:
            strings = self.tokens if tokens else self.words
            forms = self._forms[key] = [normal(s, case_sensitive) for s in strings]
        return forms


@dataclass(frozen=True)
class _WordKeys:
    """Every (distinct word, key) pair of one kind of key, as arrays."""

    key_index: dict[str, int]
    word_of_pair: np.ndarray
    key_of_pair: np.ndarray
    n_words: int

    @classmethod
    def of(cls, words: Sequence[str], predicate: _Keyed) -> _WordKeys:
        key_index: dict[str, int] = {}
        word_of_pair: list[int] = []
        key_of_pair: list[int] = []
        for w, word in enumerate(words):
            for key in predicate.keys_of(word):
                word_of_pair.append(w)
                key_of_pair.append(_id(key_index, key))
        return cls(
            key_index,
            np.asarray(word_of_pair, dtype=np.int64),
            np.asarray(key_of_pair, dtype=np.int64),
            len(words),
        )

    def holding(self, wanted: frozenset[str]) -> np.ndarray:
        """Per distinct word, whether one of its keys is wanted."""
        ids = [self.key_index[k] for k in wanted if k in self.key_index]
        holds = np.zeros(self.n_words, dtype=bool)
        if ids:
            holds[self.word_of_pair[np.isin(self.key_of_pair, ids)]] = True
        return holds


def _id(index: dict[str, int], key: str) -> int:
    return index.setdefault(key, len(index))


def _spread_array(distinct: np.ndarray, ids: np.ndarray) -> np.ndarray:
    verdicts: np.ndarray = np.append(distinct, False)[ids]  # NONE (-1) reads the False
    return verdicts


Scored = tuple["Predicate", np.ndarray]  # a candidate and its verdict per labelled token
