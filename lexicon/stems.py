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


def root_keys(word: str) -> tuple[str, ...]:
    """What a word's root offers to match against `base_keys`: itself exactly ("=")
    and each of its prefixes long enough to stand for a base ("^")."""
    mine = root(word)
    return (f"={mine}", *(f"^{mine[:n]}" for n in range(MIN_PREFIX_ROOT, len(mine) + 1)))


def base_keys(base_roots: tuple[str, ...]) -> frozenset[str]:
    """The keys of words built on `base_roots`: a word is built on a base when its own
    root starts with it ("foolish" on "fool"), or equals it when it is short."""
    return frozenset(f"^{b}" if len(b) >= MIN_PREFIX_ROOT else f"={b}" for b in base_roots)


def built_on(word: str, base_roots: tuple[str, ...]) -> bool:
    """Whether `word` is an inflection or derivation of a word whose root is one of
    `base_roots`."""
    return not base_keys(base_roots).isdisjoint(root_keys(word))
