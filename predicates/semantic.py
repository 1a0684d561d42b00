"""A semantic field: words close in meaning to the words a feature fires on, judged by
nearest neighbours in a word-vector space (lexicon.word_vectors), so it covers words the
evidence never showed ("birthday" and "reward" for a feature seen firing on "gift" and
"christmas").

A word belongs when its mean cosine to its `k` nearest `anchors` (the firing words)
exceeds its mean cosine to its `k` nearest `contrast` words (words of contexts where the
feature stays quiet) by more than `margin`. The contrast is what makes it a field and
not a blur: words close to everything ("thing", "people") sit near the contrast too.
Only content words count: three letters or more, not a function word.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import Field

from lexicon.function_words import ALL_FUNCTION_WORDS
from lexicon.word_vectors import WordVectors
from predicates.base import _WordLocal

CONTENT = re.compile(r"[a-z]{3,}")
SHOWN = 3  # anchors an explanation names


def content_word(word: str | None) -> str | None:
    """The lowercased word when it is a content word, else None."""
    if word is None:
        return None
    lowered = word.lower()
    return lowered if CONTENT.fullmatch(lowered) and lowered not in ALL_FUNCTION_WORDS else None


class SemanticField(_WordLocal):
    """Words close in meaning to `anchors` and not to `contrast` (see the module)."""

    kind: Literal["semantic_field"] = "semantic_field"
    anchors: tuple[str, ...] = Field(min_length=1)  # most frequent first
    contrast: tuple[str, ...] = Field(min_length=1)
    margin: float
    k: int = Field(default=3, ge=1, le=20)

    def holds_for_word(self, word: str) -> bool:
        lowered = content_word(word)
        return lowered is not None and bool(field_scores(self, [lowered])[0] > self.margin)

    def describe(self) -> str:
        shown = ", ".join(f'"{w}"' for w in self.anchors[:SHOWN])
        return f"words related to {shown}"

    def size(self) -> int:
        return 2  # a field and its examples, as a WordNet class


def field_scores(field: SemanticField, words: list[str], leave_out: bool = False) -> np.ndarray:
    """Per (lowercased) word, its anchor closeness less its contrast closeness. With
    `leave_out`, a word is not its own neighbour (to judge the field on the words it
    was made from as on new ones)."""
    anchors, contrast = _matrices(field)
    vectors = WordVectors()(words)
    near_anchors, near_contrast = vectors @ anchors.T, vectors @ contrast.T
    if leave_out:
        index_a = {w: i for i, w in enumerate(field.anchors)}
        index_c = {w: i for i, w in enumerate(field.contrast)}
        for row, word in enumerate(words):
            if word in index_a:
                near_anchors[row, index_a[word]] = -np.inf
            if word in index_c:
                near_contrast[row, index_c[word]] = -np.inf
    closeness: np.ndarray = _top_mean(near_anchors, field.k) - _top_mean(near_contrast, field.k)
    return closeness


def _top_mean(similarity: np.ndarray, k: int) -> np.ndarray:
    """Mean of each row's k largest finite values (-1 for a row with none)."""
    k = min(k, similarity.shape[1])
    top = -np.sort(-similarity, axis=1)[:, :k]
    finite = np.isfinite(top)  # a left-out word on a short list is not a neighbour
    count = finite.sum(axis=1)
    total = np.where(finite, top, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), -1.0)


@lru_cache(maxsize=64)
def _matrices(field: SemanticField) -> tuple[np.ndarray, np.ndarray]:
    vectors = WordVectors()
    return vectors(list(field.anchors)), vectors(list(field.contrast))
