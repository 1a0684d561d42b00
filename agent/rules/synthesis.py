"""Synthesise a predicate from labelled tokens: the `rules` reasoner's hypotheses.

Candidates come from the evidence itself (the tokens where the feature fires, their
neighbours, the lines they sit on, word lists and word families fitted to it), from
WordNet (the classes its firing words share), and from a small library of token,
word and position classes. Each is scored by token-level agreement with the labels,
less a description-length penalty; the best are grown greedily by "or" (to cover what
they miss) and "and" (to drop what they wrongly include) while the score keeps rising.
Everything is evaluated once per candidate into flat boolean arrays (once per distinct
token where it can: `TokenTable`), so combining is cheap.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from agent.rules.classes import word_classes
from agent.rules.table import Scored, TokenTable
from agent.rules.word_lists import WORD_COST, fitted_lists
from lexicon.function_words import CATEGORIES
from predicates.context import CodeLike, LineStart, SentenceStart
from predicates.language import (
    AfterLinePrefix,
    AllOf,
    AnyOf,
    BlankToken,
    InsideQuotes,
    Neighbour,
    Preceded,
    Predicate,
    TokenRegex,
    TokenView,
    WordRegex,
    normal,
)
from predicates.lexical import FunctionWord, WordClass

# Token classes worth trying on any feature: (pattern, plain-English meaning).
TOKEN_CLASSES = (
    (r"\d+", "numbers written with digits"),
    (r"[A-Z]{2,}", "words written in capital letters"),
    (r"[A-Z][a-z]+", "capitalised words"),
    (r"[a-z]+", "lowercase words"),
    (r"[a-z]+ing", "lowercase words ending in -ing"),
    (r"[^\w\s]+", "punctuation"),
    (r"\?+", "question marks"),
    (r"[()]+", "parentheses"),
    (r"[\"“”]+", "double quotation marks"),
    (r"_+\w*", "names with leading underscores"),
)
# Word classes (whole words, which may span several tokens).
WORD_CLASSES = (
    (r"\d+", "numbers written with digits"),
    (r"1\d{3}|20\d{2}", "four-digit years (1000-2099)"),
    (r"[A-Z]{2,}", "words written entirely in capital letters"),
    (r"[A-Z][a-z]+", "capitalised words"),
    (r"[a-z]+ing", "lowercase words ending in -ing"),
    (r"__\w+__", 'names with double underscores on both sides, such as "__init__"'),
    (r"[a-z]+", "lowercase words"),
)
MIN_GAIN = 0.005  # F1 a combination must add to be kept
BEAM = 6  # singles the greedy growth starts from
HELD_OUT_BEAM = 2  # a confidence estimate needs the procedure's gist, not its best
SIZE_PENALTY = WORD_COST  # per unit of `Predicate.size()`: every listed word earns its place


@dataclass(frozen=True)
class Labeled:
    """A text's tokens and, per token from `offset` on, whether the feature fired there.
    The first `offset` tokens are context only (what came before an example): predicates
    read them, nothing scores them."""

    view: TokenView
    labels: tuple[bool, ...]
    offset: int = 0

    def verdicts(self, predicate: Predicate) -> list[bool]:
        """The predicate's verdict on each labelled token."""
        return predicate.evaluate(self.view)[self.offset :]


@dataclass(frozen=True)
class Agreement:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        total = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / total if total else 1.0


@dataclass(frozen=True)
class Synthesis:
    predicate: Predicate
    agreement: Agreement  # on the data it was synthesised from (word lists: out of fold)


def agreement(predicted: np.ndarray, labels: np.ndarray) -> Agreement:
    return Agreement(
        tp=int((predicted & labels).sum()),
        fp=int((predicted & ~labels).sum()),
        fn=int((~predicted & labels).sum()),
    )


def evaluate(
    predicate: Predicate, data: Sequence[Labeled], table: TokenTable | None = None
) -> np.ndarray:
    """The predicate's verdict on every labelled token of `data`, flattened (from
    `table`, the data's distinct tokens, when the predicate reads one token or word)."""
    found = table.verdicts(predicate) if table is not None else None
    if found is not None:
        return found
    parts = [item.verdicts(predicate) for item in data]
    return np.fromiter((v for part in parts for v in part), dtype=bool)


def synthesize(data: Sequence[Labeled], max_steps: int = 3, beam: int = BEAM) -> Synthesis:
    """The best predicate found for `data` (which must hold at least one firing token)."""
    return synthesize_many(data, 1, max_steps, beam)[0]


def held_out_f1(data: Sequence[Labeled]) -> float:
    """How well synthesis generalizes on this feature: the odd texts judged by the
    predicate synthesised from the even ones, token F1. This, not the fit to the data
    a predicate was made from, is what a confidence may claim."""
    train = [item for i, item in enumerate(data) if i % 2 == 0]
    test = [item for i, item in enumerate(data) if i % 2 == 1]
    truth = np.fromiter((v for item in test for v in item.labels), dtype=bool)
    if not any(any(item.labels) for item in train):
        return 0.0
    predicted = evaluate(synthesize(train, beam=HELD_OUT_BEAM).predicate, test)
    return agreement(predicted, truth).f1


def synthesize_many(
    data: Sequence[Labeled], n: int, max_steps: int = 3, beam: int = BEAM
) -> list[Synthesis]:
    """Up to n distinct predicates for `data`, best first: rival hypotheses."""
    table = TokenTable.of(data)
    labels = table.labels
    if not labels.any():
        raise ValueError("no token fires in the data: there is nothing to explain")
    pool = candidates(data, table)

    def value(predicate: Predicate, predicted: np.ndarray) -> float:
        return agreement(predicted, labels).f1 - SIZE_PENALTY * predicate.size()

    # Grow from each of the best singles: the single best is often a word list that
    # fits the evidence by rote, while a class plus a context rule generalises.
    seeds = sorted(pool, key=lambda pair: value(*pair), reverse=True)[: max(beam, n)]
    grown = sorted(
        (_grow(seed, pool, value, max_steps) for seed in seeds),
        key=lambda pair: value(*pair),
        reverse=True,
    )
    out: list[Synthesis] = []
    for predicate, predicted in grown:  # distinct in what they say, not only in form
        if all(predicate.describe() != s.predicate.describe() for s in out):
            out.append(Synthesis(predicate, agreement(predicted, labels)))
    return out[:n]


def _grow(
    seed: Scored, pool: list[Scored], value: Callable[[Predicate, np.ndarray], float], steps: int
) -> Scored:
    best, best_values = seed
    for _ in range(steps):
        combos = (
            (combine(best, other), join(best_values, other_values))
            for other, other_values in pool
            if other != best and not _says_again(best, other)
            for combine, join in ((_any, np.logical_or), (_all, np.logical_and))
        )
        top, top_values = max(combos, key=lambda pair: value(*pair))
        if value(top, top_values) < value(best, best_values) + MIN_GAIN:
            break
        best, best_values = top, top_values
    return best, best_values


def pruned(predicate: Predicate, data: Sequence[Labeled], table: TokenTable) -> Predicate:
    """`predicate` without the parts of its "and"s and "or"s that change no verdict on
    `data`, the costliest tried first: growth by "and" can turn "A or B" into "(A or B)
    and B", which says B with more words. For a conclusion, not for rivals: two
    predicates that agree on the evidence may differ on new text, which is what the
    agent's experiments are for."""
    if not isinstance(predicate, AnyOf | AllOf):
        return predicate
    kind = type(predicate)
    parts = [pruned(p, data, table) for p in predicate.parts]
    verdicts = evaluate(kind(parts=tuple(parts)), data, table)
    for part in sorted(parts, key=lambda p: p.size(), reverse=True):
        rest = [p for p in parts if p is not part]
        if rest and np.array_equal(evaluate(_joined(kind, rest), data, table), verdicts):
            parts = rest
    return _joined(kind, parts)


def _joined(kind: type[AnyOf] | type[AllOf], parts: list[Predicate]) -> Predicate:
    return parts[0] if len(parts) == 1 else kind(parts=tuple(parts))


def _says_again(best: Predicate, other: Predicate) -> bool:
    """Whether `other` is a class `best` already names (WordNet has several "food"s)."""
    if not isinstance(other, WordClass):
        return False
    parts = best.parts if isinstance(best, AnyOf | AllOf) else (best,)
    return any(isinstance(p, WordClass) and p.name == other.name for p in parts)


def _any(a: Predicate, b: Predicate) -> Predicate:
    return AnyOf(parts=(*_flat(a, AnyOf), *_flat(b, AnyOf)))


def _all(a: Predicate, b: Predicate) -> Predicate:
    return AllOf(parts=(*_flat(a, AllOf), *_flat(b, AllOf)))


def _flat(p: Predicate, kind: type[AnyOf] | type[AllOf]) -> tuple[Predicate, ...]:
    return p.parts if isinstance(p, kind) else (p,)


# -- candidates ------------------------------------------------------------------------


def candidates(data: Sequence[Labeled], table: TokenTable | None = None) -> list[Scored]:
    """Every candidate with its verdict on each labelled token of `data`: classes of
    tokens and words, contexts, WordNet classes, and word lists (judged out of fold)."""
    table = table or TokenTable.of(data)
    fixed: list[Predicate] = [TokenRegex(pattern=p, meaning=m) for p, m in TOKEN_CLASSES]
    fixed.extend(BlankToken(shape=shape) for shape in ("space", "newline", "tab"))
    fixed.extend(WordRegex(pattern=p, meaning=m) for p, m in WORD_CLASSES)
    fixed.extend(Preceded(pattern=p) for p in _preceding_patterns(data))
    fixed.append(Preceded(pattern=r"[$£€¥]\s?[\d,.]*", meaning="amounts after a currency sign"))
    for offset in (-1, 1):
        fixed.extend(
            Neighbour(offset=offset, inner=TokenRegex(pattern=pattern, meaning=meaning))
            for pattern, meaning in TOKEN_CLASSES[:4]
        )
    fixed.extend(
        TokenRegex(pattern=f"[A-Za-z]*{s}", meaning=f'words ending in "{s}"')
        for s in _suffixes(data)
    )
    fixed.extend(
        TokenRegex(pattern=rf"\S*{re.escape(c)}\S*", meaning=f'tokens containing "{c}"')
        for c in _marks(data)
    )
    fixed.extend(
        TokenRegex(pattern=f"(?i)[a-z]*{g}[a-z]*", meaning=f'tokens containing the letters "{g}"')
        for g in _letter_groups(data)
    )
    fixed.append(InsideQuotes())
    fixed.extend(
        AfterLinePrefix(prefix=p, until=until) for p in _line_prefixes(data) for until in ("", ",")
    )
    fixed += [SentenceStart(), LineStart(), CodeLike()]
    fixed.extend(FunctionWord(category=c) for c in CATEGORIES)
    fixed.extend(Neighbour(offset=-1, inner=FunctionWord(category=c)) for c in CATEGORIES)
    fixed.extend(word_classes(table))
    return [(c, evaluate(c, data, table)) for c in fixed] + fitted_lists(table)


def _active_tokens(data: Sequence[Labeled]) -> Iterable[tuple[TokenView, int]]:
    for item in data:
        for i, label in enumerate(item.labels, start=item.offset):
            if label:
                yield item.view, i


def _marks(data: Sequence[Labeled]) -> list[str]:
    """Punctuation characters found in at least 30% of the firing tokens: tokens glue
    marks together ("?)", ").") and a feature often reads only one of them."""
    tokens = [v.tokens[i].strip() for v, i in _active_tokens(data)]
    counts = Counter(c for t in tokens for c in set(t) if not c.isalnum() and not c.isspace())
    return [c for c, n in counts.most_common(3) if n >= 0.3 * len(tokens)]


def _letter_groups(data: Sequence[Labeled]) -> list[str]:
    """Letter groups of 2 to 4 (any case) inside at least 30% of the firing tokens:
    spelling features ("qu" in "quote", "Query", "acquire") read parts of words."""
    tokens = [normal(v.tokens[i]) for v, i in _active_tokens(data)]
    tokens = [t for t in tokens if t.isalpha()]
    counts = Counter(
        g for t in tokens for g in {t[i : i + n] for n in (2, 3, 4) for i in range(len(t) - n + 1)}
    )
    found = [g for g, c in counts.most_common(6) if tokens and c >= 0.3 * len(tokens)]
    return [g for g in found if not any(g != h and g in h for h in found)][:3]  # longest


def _suffixes(data: Sequence[Labeled]) -> list[str]:
    """Word endings shared by at least 30% of the firing word tokens."""
    words = [normal(v.tokens[i]) for v, i in _active_tokens(data)]
    words = [w for w in words if w.isalpha() and len(w) > 3]
    counts = Counter(w[-n:] for w in words for n in (2, 3, 4))
    return [s for s, c in counts.most_common(3) if words and c >= 0.3 * len(words)]


def _line_prefixes(data: Sequence[Labeled]) -> list[str]:
    """Non-word starts of the lines the feature fires on (e.g. "--"), if most share one."""
    starts: Counter[str] = Counter()
    total = 0
    for view, i in _active_tokens(data):
        text, at = view.text, view.starts[i]
        line = text[text.rfind("\n", 0, at) + 1 :].lstrip()
        prefix = line[: len(line) - len(line.lstrip("-*#>=~+:|"))]
        total += 1
        if prefix:
            starts[prefix[:3]] += 1
    return [p for p, c in starts.most_common(2) if c >= 0.5 * total]


def _preceding_patterns(data: Sequence[Labeled]) -> list[str]:
    """What comes right before the firing words: the commonest previous word with its
    separator (e.g. "of "), and the commonest two-character shape (e.g. "[a-z] ")."""
    literal: Counter[str] = Counter()
    shape: Counter[str] = Counter()
    total = 0
    for view, i in _active_tokens(data):
        span = view.words[i]
        if span is None or (i > 0 and view.words[i - 1] == span):
            continue  # count each firing word once, at its first token
        before = view.text[: span[0]]
        total += 1
        previous = re.search(r"(\w+)(\W{1,2})$", before)
        if previous:
            literal[re.escape(previous.group(1)) + re.escape(previous.group(2))] += 1
        shape["".join(_char_class(c) for c in before[-2:])] += 1
    wanted = 0.3 * total
    picks = [p for counter in (literal, shape) for p, c in counter.most_common(1) if c >= wanted]
    return [rf"\b{p}" if p[:1].isalnum() else p for p in picks if p]


def _char_class(c: str) -> str:
    if c.islower():
        return "[a-z]"
    if c.isupper():
        return "[A-Z]"
    if c.isdigit():
        return r"\d"
    return re.escape(c)
