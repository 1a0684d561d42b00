"""Synthesise a predicate from labelled tokens: the `rules` reasoner's hypotheses.

Candidates come from the evidence itself (the tokens where the feature fires, their
neighbours, the lines they sit on) and from a small library of token classes. Each is
scored by token-level agreement with the labels; the best is then grown greedily by
"or" (to cover what it misses) and "and" (to drop what it wrongly includes) while the
F1 keeps rising. Everything is evaluated once per candidate into flat boolean arrays,
so combining is cheap.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from agent.rules.context import CodeLike, LineStart, SentenceStart
from agent.rules.lexical import FunctionWord, LemmaIn, WordClass, base_forms
from agent.rules.predicates import (
    AfterLinePrefix,
    AllOf,
    AnyOf,
    InsideQuotes,
    Neighbour,
    Preceded,
    Predicate,
    TokenIn,
    TokenRegex,
    TokenView,
    WordIn,
    WordRegex,
    normal,
)
from lexicon.function_words import CATEGORIES
from lexicon.wordnet import WordNet, WordNetMissing, wordnet

log = logging.getLogger(__name__)

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
    (r"[A-Z]{2,}", "words written entirely in capital letters"),
    (r"[A-Z][a-z]+", "capitalised words"),
    (r"[a-z]+ing", "lowercase words ending in -ing"),
    (r"__\w+__", 'names with double underscores on both sides, such as "__init__"'),
    (r"[a-z]+", "lowercase words"),
)
MIN_PRECISION = 0.5  # a word joins a token set only if the feature fires on most of it
MIN_GAIN = 0.005  # F1 a combination must add to be kept
BEAM = 6  # singles the greedy growth starts from
SIZE_PENALTY = 0.01  # per unit of `Predicate.size()`: every listed word must earn its place


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


def evaluate(predicate: Predicate, data: Sequence[Labeled]) -> np.ndarray:
    """The predicate's verdict on every token of `data`, flattened."""
    parts = [item.verdicts(predicate) for item in data]
    return np.fromiter((v for part in parts for v in part), dtype=bool)


def synthesize(data: Sequence[Labeled], max_steps: int = 3) -> Synthesis:
    """The best predicate found for `data` (which must hold at least one firing token)."""
    return synthesize_many(data, 1, max_steps)[0]


def held_out_f1(data: Sequence[Labeled], folds: int = 2) -> float:
    """How well synthesis generalizes on this feature: each fold's texts judged by the
    predicate synthesised from the other folds, token F1 pooled over all folds. This,
    not the fit to the data a predicate was made from, is what a confidence may claim."""
    totals = Agreement(0, 0, 0)
    for k in range(folds):
        train = [item for i, item in enumerate(data) if i % folds != k]
        test = [item for i, item in enumerate(data) if i % folds == k]
        truth = np.fromiter((v for item in test for v in item.labels), dtype=bool)
        if any(any(item.labels) for item in train):
            predicted = evaluate(synthesize(train).predicate, test)
        else:
            predicted = np.zeros_like(truth)
        found = agreement(predicted, truth)
        totals = Agreement(totals.tp + found.tp, totals.fp + found.fp, totals.fn + found.fn)
    return totals.f1


def synthesize_many(data: Sequence[Labeled], n: int, max_steps: int = 3) -> list[Synthesis]:
    """Up to n distinct predicates for `data`, best first: rival hypotheses."""
    labels = np.fromiter((v for item in data for v in item.labels), dtype=bool)
    if not labels.any():
        raise ValueError("no token fires in the data: there is nothing to explain")
    pool = candidates(data)

    def value(predicate: Predicate, predicted: np.ndarray) -> float:
        return agreement(predicted, labels).f1 - SIZE_PENALTY * predicate.size()

    # Grow from each of the best singles: the single best is often a word list that
    # fits the evidence by rote, while a class plus a context rule generalises.
    seeds = sorted(pool, key=lambda pair: value(*pair), reverse=True)[: max(BEAM, n)]
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


Scored = tuple[Predicate, np.ndarray]


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


def candidates(data: Sequence[Labeled]) -> list[Scored]:
    """Every candidate with its verdict on each token of `data`. Word lists are fitted
    to the data, so they are judged out of fold (a list built on the odd texts decides
    the even ones, and the reverse): a list that only recites the examples loses to
    the class they come from, while a list of words that recur keeps its score."""
    fixed: list[Predicate] = [TokenRegex(pattern=p, meaning=m) for p, m in TOKEN_CLASSES]
    fixed.extend(WordRegex(pattern=p, meaning=m) for p, m in WORD_CLASSES)
    fixed.extend(Preceded(pattern=p) for p in _preceding_patterns(data))
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
    fixed.append(InsideQuotes())
    fixed.extend(
        AfterLinePrefix(prefix=p, until=until) for p in _line_prefixes(data) for until in ("", ",")
    )
    fixed += [SentenceStart(), LineStart(), CodeLike()]
    fixed.extend(FunctionWord(category=c) for c in CATEGORIES)
    fixed.extend(Neighbour(offset=-1, inner=FunctionWord(category=c)) for c in CATEGORIES)
    fixed.extend(word_classes(data))
    scored = [(c, evaluate(c, data)) for c in fixed]
    for fit in _list_fitters():
        whole = fit(data)
        if whole is not None:
            scored.append((whole, _out_of_fold(fit, data)))
    return scored


Fitter = Callable[[Sequence[Labeled]], Predicate | None]


def _list_fitters() -> list[Fitter]:
    """Word-list candidates, each as a function of the data it is fitted to."""
    fitters: list[Fitter] = []
    for case_sensitive in (False, True):

        def tokens(data: Sequence[Labeled], cs: bool = case_sensitive) -> Predicate | None:
            words = _word_set(data, lambda view, i: view.tokens[i], cs)
            return TokenIn(words=words, case_sensitive=cs) if words else None

        def whole_words(data: Sequence[Labeled], cs: bool = case_sensitive) -> Predicate | None:
            words = _word_set(data, lambda view, i: view.word(i), cs)
            return WordIn(words=words, case_sensitive=cs) if words else None

        fitters += [tokens, whole_words]

    def lemmas(data: Sequence[Labeled]) -> Predicate | None:
        found = _word_set(data, _lemma_of, case_sensitive=False)
        return LemmaIn(lemmas=found) if found else None

    fitters.append(lemmas)
    for offset in (-1, 1):

        def neighbours(data: Sequence[Labeled], at: int = offset) -> Predicate | None:
            words = _word_set(data, _neighbour_of(at), case_sensitive=False)
            return Neighbour(offset=at, inner=TokenIn(words=words)) if words else None

        fitters.append(neighbours)
    return fitters


def _out_of_fold(fit: Fitter, data: Sequence[Labeled]) -> np.ndarray:
    """`fit`'s verdicts on `data`, each text judged by the predicate fitted to the texts
    of the other fold (odd or even position)."""
    folds = [[item for i, item in enumerate(data) if i % 2 == side] for side in (0, 1)]
    fitted = [fit(folds[1]), fit(folds[0])]  # for the even texts, for the odd ones
    verdicts = []
    for i, item in enumerate(data):
        predicate = fitted[i % 2]
        verdicts.append(item.verdicts(predicate) if predicate else [False] * len(item.labels))
    return np.fromiter((v for part in verdicts for v in part), dtype=bool)


def _neighbour_of(offset: int) -> Callable[[TokenView, int], str | None]:
    def pick(view: TokenView, i: int) -> str | None:
        j = i + offset
        return view.tokens[j] if 0 <= j < len(view.tokens) else None

    return pick


def _word_set(
    data: Sequence[Labeled],
    token_at: Callable[[TokenView, int], str | None],
    case_sensitive: bool,
) -> tuple[str, ...]:
    """Words (normalised tokens at each position, as `token_at` picks them) grown greedily,
    most firing first, while the token-level F1 of "the word is one of these" rises."""
    fired: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for item in data:
        for i, label in enumerate(item.labels, start=item.offset):
            token = token_at(item.view, i)
            if token is None or not token.strip():
                continue
            word = normal(token, case_sensitive)
            seen[word] += 1
            fired[word] += label
    positives = sum(sum(item.labels) for item in data)
    chosen: list[str] = []
    tp = fp = 0
    best_f1 = 0.0
    for word, hits in fired.most_common():
        if hits == 0 or hits / seen[word] < MIN_PRECISION:
            continue
        f1 = 2 * (tp + hits) / (2 * (tp + hits) + fp + seen[word] - hits + positives - tp - hits)
        if f1 <= best_f1:
            continue
        chosen.append(word)
        tp, fp, best_f1 = tp + hits, fp + seen[word] - hits, f1
    return tuple(chosen)


def _active_tokens(data: Sequence[Labeled]) -> Iterable[tuple[TokenView, int]]:
    for item in data:
        for i, label in enumerate(item.labels, start=item.offset):
            if label:
                yield item.view, i


def _lemma_of(view: TokenView, i: int) -> str | None:
    """The base form of the word token i belongs to (its shortest WordNet lemma)."""
    word = view.word(i)
    return min(sorted(base_forms(word)), key=len) if word else None


MAX_CLASSES = 12  # WordNet classes tried per feature
MIN_CLASS_SHARE = 0.2  # of the firing words' firings a class must cover


def word_classes(data: Sequence[Labeled]) -> list[WordClass]:
    """WordNet classes of the words the feature fires on (each covering at least 3
    distinct ones and a real share of the firing), best first by their F1 on `data`
    counted word by word, the most specific among those covering the same words: a
    class reaches words the evidence never showed. None when WordNet is missing."""
    wn = _wordnet_or_none()
    if wn is None:
        return []
    seen: Counter[str] = Counter()
    fired: Counter[str] = Counter()
    for item in data:
        for i, label in enumerate(item.labels, start=item.offset):
            word = item.view.word(i)
            if word and word.isalpha():
                seen[word.lower()] += 1
                fired[word.lower()] += label
    positives = sum(sum(item.labels) for item in data)
    covered: dict[str, set[str]] = defaultdict(set)
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    for word, count in seen.items():
        for concept in wn.classes(word):
            tp[concept] += fired[word]
            fp[concept] += count - fired[word]
            if fired[word]:
                covered[concept].add(word)
    firing = sum(fired.values())
    kept = [c for c in covered if len(covered[c]) >= 3 and tp[c] >= MIN_CLASS_SHARE * firing]
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
            concept=c, name=_class_name(c), senses=senses, examples=_typical(c, covered[c], fired)
        )
        for c in ranked
        for senses in (1, 3)  # its commonest sense only, or any of its first three
    ]


def _wordnet_or_none() -> WordNet | None:
    try:
        return wordnet()
    except WordNetMissing as err:
        if not _warned:
            log.warning("no WordNet classes in hypotheses: %s", err)
            _warned.append(True)
        return None


_warned: list[bool] = []


def _typical(concept: str, words: set[str], fired: Counter[str]) -> tuple[str, ...]:
    """Up to four examples of a class from the firing words: those whose commonest
    sense is in it first ("dog" before "young" for animals), then the most firing."""
    wn = wordnet()
    ranked = sorted(words, key=lambda w: (concept not in wn.classes(w, 1), -fired[w], w))
    out: dict[str, str] = {}  # one form per word: "cat", not "cat" and "cats"
    for word in ranked:
        if len(word) >= 3:
            out.setdefault(min(sorted(base_forms(word)), key=len), word)
    return tuple(out.values())[:4]


def _class_name(concept: str) -> str:
    wn = wordnet()
    plain = wn.describe(concept)
    return f"kinds of {plain}" if concept in wn.synsets else plain


def _marks(data: Sequence[Labeled]) -> list[str]:
    """Punctuation characters found in at least 30% of the firing tokens: tokens glue
    marks together ("?)", ").") and a feature often reads only one of them."""
    tokens = [v.tokens[i].strip() for v, i in _active_tokens(data)]
    counts = Counter(c for t in tokens for c in set(t) if not c.isalnum() and not c.isspace())
    return [c for c, n in counts.most_common(3) if n >= 0.3 * len(tokens)]


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
