"""Word roots for derivational families: Snowball's English stemmer (Porter2, from the
`snowballstemmer` package) with a negating prefix dropped, so "remarks", "remarkable"
and "unremarkable" share the root of "remark"."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

NEGATING = ("non", "un")  # "unremarkable" is built on "remark"; "dis-", "in-" too often are not
MIN_PREFIX_ROOT = 4  # shorter roots match only exactly: "man" must not take "manage"


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import snowballstemmer  # a small pure-Python package; imported when first needed

    return snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def root(word: str) -> str:
    """The word's root: its Snowball stem, lowercased, a negating prefix dropped."""
    stem = str(_stemmer().stemWord(word.lower()))
    for prefix in NEGATING:
        rest = stem[len(prefix) :]
        if stem.startswith(prefix) and len(rest) >= MIN_PREFIX_ROOT:
            return rest
    return stem


def built_on(word: str, base_roots: tuple[str, ...]) -> bool:
    """Whether `word` is an inflection or derivation of a word whose root is one of
    `base_roots`: its own root starts with it ("foolish" on "fool"), or equals it when
    it is short."""
    mine = root(word)
    return any(
        mine.startswith(base) if len(base) >= MIN_PREFIX_ROOT else mine == base
        for base in base_roots
    )
