"""What every predicate shares: a text seen as its tokens (`TokenView`), how tokens are
compared (`normal`), and the base classes of listed and pattern predicates."""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import ClassVar

import regex
from pydantic import BaseModel, ConfigDict, Field, field_validator

from probes.regex_limit import LimitedPattern, limited

SHOWN = 5  # words of a list an explanation prints; the rest are counted
QUOTES = '"“”'


@dataclass(frozen=True)
class TokenView:
    """A text as tokens; `starts[i]` is where token i begins in `text`."""

    tokens: tuple[str, ...]

    @cached_property
    def text(self) -> str:
        return "".join(self.tokens)

    @cached_property
    def starts(self) -> list[int]:
        out, at = [], 0
        for token in self.tokens:
            out.append(at)
            at += len(token)
        return out

    @cached_property
    def words(self) -> tuple[tuple[int, int] | None, ...]:
        """Per token, the span of the word (run of letters, digits and underscores) it
        is part of, which may run over several tokens; None for tokens without one."""
        return _word_spans(self.tokens)

    def word(self, i: int) -> str | None:
        span = self.words[i]
        return self.text[span[0] : span[1]] if span else None

    @classmethod
    def of(cls, tokens: Sequence[str]) -> TokenView:
        return cls(tuple(tokens))


_WORD = re.compile(r"\w+")


@lru_cache(maxsize=8192)  # the same texts come back as new views (evidence, step after step)
def _word_spans(tokens: tuple[str, ...]) -> tuple[tuple[int, int] | None, ...]:
    text = "".join(tokens)
    spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    out: list[tuple[int, int] | None] = []
    at = start = 0
    for token in tokens:
        end = start + len(token)
        while at < len(spans) and spans[at][1] <= start:
            at += 1
        out.append(spans[at] if at < len(spans) and spans[at][0] < end else None)
        start = end
    return tuple(out)


def normal(token: str, case_sensitive: bool = False) -> str:
    """A token as predicates compare it: surrounding whitespace dropped, lowercased
    unless case matters."""
    stripped = token.strip()
    return stripped if case_sensitive else stripped.lower()


class _Predicate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def evaluate(self, view: TokenView) -> list[bool]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def size(self) -> int:
        """How complex it is (parts and words), to prefer simple explanations."""
        return 1


class _TokenLocal(_Predicate):
    """A predicate whose verdict on a token depends on the token's text alone; verdicts
    are remembered per distinct text (a corpus repeats its tokens)."""

    def holds_for_token(self, token: str) -> bool:
        raise NotImplementedError

    def evaluate(self, view: TokenView) -> list[bool]:
        holds = remembered(self, self.holds_for_token)
        return [holds(token) for token in view.tokens]


class _WordLocal(_Predicate):
    """A predicate whose verdict on a token depends only on the whole word it is part
    of (tokens without one never fire); verdicts are remembered per distinct word."""

    def holds_for_word(self, word: str) -> bool:
        raise NotImplementedError

    def evaluate(self, view: TokenView) -> list[bool]:
        holds = remembered(self, self.holds_for_word)
        words = (view.word(i) for i in range(len(view.tokens)))
        return [word is not None and holds(word) for word in words]


class _Keyed(_WordLocal):
    """A word-local predicate that holds when one of the word's keys (its base forms,
    its root, its WordNet classes) is one it wants. A token table computes each
    distinct word's keys once per kind of key and judges every such predicate by set
    membership, not word by word."""

    def key_kind(self) -> Hashable:
        """Which keys it reads: predicates of one kind share the words' keys."""
        raise NotImplementedError

    def keys_of(self, word: str) -> Iterable[str]:
        raise NotImplementedError

    def wanted(self) -> frozenset[str]:
        raise NotImplementedError

    def holds_for_word(self, word: str) -> bool:
        return not self.wanted().isdisjoint(self.keys_of(word))


def remembered(predicate: _Predicate, holds: Callable[[str], bool]) -> Callable[[str], bool]:
    """`holds`, answered from the predicate's memory of the texts it judged before (the
    same classes are tried on every feature)."""
    memo = _memo_of(predicate)

    def cached(text: str) -> bool:
        verdict = memo.get(text)
        if verdict is None:
            verdict = memo[text] = holds(text)
        return verdict

    return cached


@lru_cache(maxsize=4096)
def _memo_of(predicate: _Predicate) -> dict[str, bool]:
    """Verdicts per distinct token or word, shared by equal predicates. Kept outside
    the model: a copy with other fields must not inherit them."""
    return {}


class _Listed(_Predicate):
    """A set of words (tokens or whole words, as the subclass reads them)."""

    words: tuple[str, ...] = Field(min_length=1)
    case_sensitive: bool = False
    _noun: ClassVar[str]

    def describe(self) -> str:
        shown = ", ".join(f'"{w}"' for w in self.words[:SHOWN])
        more = f" and {len(self.words) - SHOWN} more" if len(self.words) > SHOWN else ""
        case = " (exact case)" if self.case_sensitive else ""
        return f"the {self._noun}{'s' if len(self.words) > 1 else ''} {shown}{more}{case}"

    def size(self) -> int:
        return len(self.words)  # a list is as long as what it lists, however it is printed

    @property
    def _set(self) -> frozenset[str]:
        return _as_set(self.words)


class _Pattern(_Predicate):
    """A regex, with its plain-English reading when known. It may come from a stored
    explanation or an HTTP request: it runs under a time limit (probes.regex_limit)."""

    pattern: str
    meaning: str = ""
    _unnamed: ClassVar[str]  # how describe() reads the bare pattern

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            _compile(pattern)
        except regex.error as err:
            raise ValueError(f"invalid regex {pattern!r}: {err}") from None
        return pattern

    def describe(self) -> str:
        return self.meaning or f"{self._unnamed} /{self.pattern}/"

    @property
    def _compiled(self) -> LimitedPattern:
        return limited(self.pattern)  # cached there: one call on the hot path


def _overlapping(view: TokenView, spans: list[tuple[int, int]]) -> list[bool]:
    """Per token, whether its non-space characters overlap one of the spans."""
    out = []
    for start, token in zip(view.starts, view.tokens, strict=True):
        lo = start + len(token) - len(token.lstrip())
        hi = start + len(token.rstrip())
        out.append(any(s < hi and lo < e for s, e in spans if s < e))
    return out


@lru_cache(maxsize=4096)
def _as_set(words: tuple[str, ...]) -> frozenset[str]:
    return frozenset(words)


def _compile(pattern: str, shown: str | None = None) -> LimitedPattern:
    """A predicate's regex, compiled once, to run under the time limit; `shown` is the
    rule as written when `pattern` wraps it."""
    return limited(pattern, 0, shown)
