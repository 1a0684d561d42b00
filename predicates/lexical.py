"""Predicates that generalise past the words the evidence showed: a WordNet class (every
animal, every verb of motion), a word family (every form of "change"), and a closed
class of function words (prepositions, pronouns, ...). Each reads the whole word a token
belongs to, as `WordIn` does."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from functools import lru_cache
from typing import Literal

from pydantic import Field

from lexicon.function_words import FUNCTION_WORDS, FunctionCategory
from lexicon.stems import base_keys, root, root_keys
from lexicon.wordnet import POS_FILES, WordNetMissing, wordnet
from predicates.base import _Keyed

MAX_SHOWN = 4  # examples an explanation names: "about 25 words" leaves room for four


def _examples(words: tuple[str, ...]) -> str:
    return ", ".join(f'"{w}"' for w in words[:MAX_SHOWN])


def _listed(words: tuple[str, ...]) -> str:
    """The first words of a list, and how many more it holds ("and 3 more")."""
    more = len(words) - MAX_SHOWN
    return _examples(words) + (f" and {more} more" if more > 0 else "")


class WordClass(_Keyed):
    """The token's word belongs to a WordNet class by one of its first `senses` senses:
    a lexicographer category (`concept` "noun.animal") or everything under a synset
    (`concept` "n02084071"). `name` and `examples` are how it reads, not what it does."""

    kind: Literal["word_class"] = "word_class"
    concept: str = Field(min_length=1)
    name: str = Field(min_length=1)
    senses: int = Field(default=3, ge=1, le=50)
    examples: tuple[str, ...] = ()

    def key_kind(self) -> Hashable:
        return ("classes", self.senses)

    def keys_of(self, word: str) -> Iterable[str]:
        return wordnet().classes(word, self.senses)

    def wanted(self) -> frozenset[str]:
        return frozenset((self.concept,))

    def describe(self) -> str:
        shown = f", such as {_examples(self.examples)}" if self.examples else ""
        name = self.name if self.name.startswith("words ") else f"words for {self.name}"
        return f"{name}{shown}"

    def size(self) -> int:
        return 2  # a class and its examples

    def members(self) -> set[str]:
        """Every single word in the class (lowercased): members to probe with."""
        return wordnet().members(self.concept, self.senses)


class LemmaIn(_Keyed):
    """The token's word is a form of one of `lemmas` (WordNet's morphy: "changes",
    "changed" and "changing" are forms of "change")."""

    kind: Literal["lemma_in"] = "lemma_in"
    lemmas: tuple[str, ...] = Field(min_length=1)

    def key_kind(self) -> Hashable:
        return "base forms"

    def keys_of(self, word: str) -> Iterable[str]:
        return base_forms(word)

    def wanted(self) -> frozenset[str]:
        return frozenset(self.lemmas)

    def describe(self) -> str:
        if len(self.lemmas) == 1:
            return f'any form of the word "{self.lemmas[0]}"'
        return f"any form of the words {_listed(self.lemmas)}"

    def size(self) -> int:
        return len(self.lemmas)


class DerivedFrom(_Keyed):
    """The token's word is built on one of `words`: any inflection or derivation
    ("remark": "remarks", "remarkable", "unremarkable"), by word roots (lexicon.stems)."""

    kind: Literal["derived_from"] = "derived_from"
    words: tuple[str, ...] = Field(min_length=1)

    def key_kind(self) -> Hashable:
        return "roots"

    def keys_of(self, word: str) -> Iterable[str]:
        return root_keys(word)

    def wanted(self) -> frozenset[str]:
        return _base_keys(self.words)

    def describe(self) -> str:
        if len(self.words) == 1:
            return f'the word "{self.words[0]}" and words built on it'
        return f"the words {_listed(self.words)} and words built on them"

    def size(self) -> int:
        return len(self.words)


@lru_cache(maxsize=4096)
def _base_keys(words: tuple[str, ...]) -> frozenset[str]:
    return base_keys(tuple(root(w) for w in words))


def base_forms(word: str) -> set[str]:
    """The word itself (lowercased) and its WordNet base forms in every part of speech."""
    key = word.lower()
    return _BASES.get(key) or _BASES.setdefault(key, _base_forms(key))


def _base_forms(word: str) -> set[str]:
    try:
        wn = wordnet()
    except WordNetMissing:
        return {word}  # without WordNet a word is its own family
    return {word, *(b for pos in POS_FILES for b in wn.lemmas(word, pos))}


_BASES: dict[str, set[str]] = {}


def family(word: str) -> str:
    """A word's family name: its shortest base form ("change" for "changes")."""
    return min(sorted(base_forms(word)), key=len)


class FunctionWord(_Keyed):
    """The token's word is one of a closed class of English function words."""

    kind: Literal["function_word"] = "function_word"
    category: FunctionCategory

    def key_kind(self) -> Hashable:
        return "lowercase"

    def keys_of(self, word: str) -> Iterable[str]:
        return (word.lower(),)

    def wanted(self) -> frozenset[str]:
        return frozenset(FUNCTION_WORDS[self.category])

    def describe(self) -> str:
        shown = sorted(FUNCTION_WORDS[self.category], key=len)[:3]
        return f"{self.category} ({', '.join(shown)}, ...)"
