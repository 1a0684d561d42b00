"""WordNet-class candidates: the classes the firing words belong to, each covering at
least 3 distinct firing words and a real share of the firing, best first by their F1 on
the data counted word by word. A class reaches words the evidence never showed."""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from agent.rules.table import TokenTable
from lexicon.wordnet import WordNet, WordNetMissing, wordnet
from predicates.lexical import WordClass, family

log = logging.getLogger(__name__)

MAX_CLASSES = 12  # classes tried per feature (each with two sense limits)
MIN_CLASS_SHARE = 0.2  # of the firing words' firings a class must cover
MIN_WORDS = 3  # distinct firing words a class must cover
EXAMPLES = 4


def word_classes(table: TokenTable) -> list[WordClass]:
    """The best WordNet classes for `table`'s firing words (none without WordNet)."""
    wn = wordnet_or_none()
    if wn is None:
        return []
    seen, fired = _counts(table)
    positives = int(table.labels.sum())
    covered: dict[str, set[str]] = defaultdict(set)
    tp: dict[str, int] = defaultdict(int)
    fp: dict[str, int] = defaultdict(int)
    for word, count in seen.items():
        for concept in wn.classes(word):
            tp[concept] += fired.get(word, 0)
            fp[concept] += count - fired.get(word, 0)
            if fired.get(word):
                covered[concept].add(word)
    firing = sum(fired.values())
    kept = [
        c
        for c in covered
        if _lemmas(covered[c]) >= MIN_WORDS and tp[c] >= MIN_CLASS_SHARE * firing and wn.nameable(c)
    ]
    # Among classes that read the data alike, the most specific says more.
    best: dict[tuple[frozenset[str], int, int], str] = {}
    for concept in kept:
        key = (frozenset(covered[concept]), tp[concept], fp[concept])
        if key not in best or wn.depth(concept) > wn.depth(best[key]):
            best[key] = concept

    def f1(c: str) -> float:
        return 2 * tp[c] / (tp[c] + fp[c] + positives)

    ranked = sorted(best.values(), key=lambda c: (-f1(c), -wn.depth(c), c))[:MAX_CLASSES]
    return [
        WordClass(
            concept=c,
            name=class_name(wn, c),
            senses=senses,
            examples=_typical(wn, c, covered[c], fired),
        )
        for c in ranked
        for senses in (1, 3)  # its commonest sense only, or any of its first three
    ]


def class_name(wn: WordNet, concept: str) -> str:
    """How an explanation names a class: "animals" (a category), "kinds of garment" (a
    noun synset), 'words meaning "difficult"' (a verb, adjective or adverb synset)."""
    plain = wn.describe(concept)
    if concept not in wn.synsets:
        return plain
    return f"kinds of {plain}" if concept.startswith("n") else f'words meaning "{plain}"'


def _counts(table: TokenTable) -> tuple[dict[str, int], dict[str, int]]:
    """Per lowercased alphabetic word: how many labelled tokens it covers, and on how
    many of them the feature fired."""
    valid = table.word_id >= 0
    seen_ids = np.bincount(table.word_id[valid], minlength=len(table.words))
    fired_ids = np.bincount(table.word_id[valid & table.labels], minlength=len(table.words))
    seen: dict[str, int] = defaultdict(int)
    fired: dict[str, int] = defaultdict(int)
    for i, word in enumerate(table.words):
        if seen_ids[i] and word.isalpha():
            seen[word.lower()] += int(seen_ids[i])
            fired[word.lower()] += int(fired_ids[i])
    return seen, fired


def _lemmas(words: set[str]) -> int:
    """How many distinct words (not forms of one word) `words` holds."""
    return len({family(w) for w in words})


def _typical(wn: WordNet, concept: str, words: set[str], fired: dict[str, int]) -> tuple[str, ...]:
    """Examples of a class from the firing words: those whose commonest sense is in it
    first ("dog" before "young" for animals), then the most firing; one form per word."""
    ranked = sorted(words, key=lambda w: (concept not in wn.classes(w, 1), -fired[w], w))
    out: dict[str, str] = {}
    for word in ranked:
        if len(word) >= 3:
            out.setdefault(family(word), word)
    return tuple(out.values())[:EXAMPLES]


def wordnet_or_none() -> WordNet | None:
    try:
        return wordnet()
    except WordNetMissing as err:
        if not _warned:
            log.warning("no WordNet classes in hypotheses: %s", err)
            _warned.append(True)
        return None


_warned: list[bool] = []
