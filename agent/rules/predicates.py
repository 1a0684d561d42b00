"""Executable hypotheses: predicates that say, for each token of a text, whether a feature
should fire there. The `rules` reasoner synthesises them from evidence, tests them on
new texts, and keeps the winner as the explanation's predicate; `describe()` renders it
in plain English.

A text is seen as its tokens (strings as the tokenizer decodes them, leading spaces
included) and their character offsets. Every predicate is a pydantic model with a
`kind`, so it serialises to JSON and back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    def words(self) -> list[tuple[int, int] | None]:
        """Per token, the span of the word (run of letters, digits and underscores) it
        is part of, which may run over several tokens; None for tokens without one."""
        spans = [(m.start(), m.end()) for m in _WORD.finditer(self.text)]
        out: list[tuple[int, int] | None] = []
        at = 0
        for start, token in zip(self.starts, self.tokens, strict=True):
            end = start + len(token)
            while at < len(spans) and spans[at][1] <= start:
                at += 1
            out.append(spans[at] if at < len(spans) and spans[at][0] < end else None)
        return out

    def word(self, i: int) -> str | None:
        span = self.words[i]
        return self.text[span[0] : span[1]] if span else None

    @classmethod
    def of(cls, tokens: Sequence[str]) -> TokenView:
        return cls(tuple(tokens))


_WORD = re.compile(r"\w+")


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


class _Listed(_Predicate):
    """A set of words (tokens or whole words, as the subclass reads them)."""

    words: tuple[str, ...] = Field(min_length=1)
    case_sensitive: bool = False
    _noun: ClassVar[str]

    def describe(self) -> str:
        shown = ", ".join(f'"{w}"' for w in self.words[:12])
        more = f" and {len(self.words) - 12} more" if len(self.words) > 12 else ""
        case = " (exact case)" if self.case_sensitive else ""
        return f"the {self._noun}{'s' if len(self.words) > 1 else ''} {shown}{more}{case}"

    def size(self) -> int:
        return 1 + len(self.words) // 4


class _Pattern(_Predicate):
    """A regex, with its plain-English reading when known."""

    pattern: str
    meaning: str = ""
    _unnamed: ClassVar[str]  # how describe() reads the bare pattern

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        re.compile(pattern)
        return pattern

    def describe(self) -> str:
        return self.meaning or f"{self._unnamed} /{self.pattern}/"


class TokenIn(_Listed):
    kind: Literal["token_in"] = "token_in"
    _noun: ClassVar[str] = "token"

    def evaluate(self, view: TokenView) -> list[bool]:
        words = set(self.words)
        return [normal(t, self.case_sensitive) in words for t in view.tokens]


class TokenRegex(_Pattern):
    """The token (without surrounding whitespace) matches `pattern` entirely."""

    kind: Literal["token_regex"] = "token_regex"
    _unnamed: ClassVar[str] = "tokens matching"

    def evaluate(self, view: TokenView) -> list[bool]:
        compiled = re.compile(self.pattern)
        return [bool(t.strip()) and compiled.fullmatch(t.strip()) is not None for t in view.tokens]


class WordIn(_Listed):
    """The word the token belongs to (all its tokens) is one of `words`."""

    kind: Literal["word_in"] = "word_in"
    _noun: ClassVar[str] = "word"

    def evaluate(self, view: TokenView) -> list[bool]:
        words = set(self.words)
        found = (view.word(i) for i in range(len(view.tokens)))
        return [w is not None and normal(w, self.case_sensitive) in words for w in found]


class WordRegex(_Pattern):
    """The word the token belongs to matches `pattern` entirely."""

    kind: Literal["word_regex"] = "word_regex"
    _unnamed: ClassVar[str] = "words matching"

    def evaluate(self, view: TokenView) -> list[bool]:
        compiled = re.compile(self.pattern)
        found = (view.word(i) for i in range(len(view.tokens)))
        return [w is not None and compiled.fullmatch(w) is not None for w in found]


class Preceded(_Pattern):
    """The text right before the token's word ends with a match of `pattern` (e.g. "of "
    for the word after "of")."""

    kind: Literal["preceded"] = "preceded"
    _unnamed: ClassVar[str] = "words right after"

    def evaluate(self, view: TokenView) -> list[bool]:
        compiled = re.compile(f"(?:{self.pattern})$")
        return [
            span is not None and compiled.search(view.text, 0, span[0]) is not None
            for span in view.words
        ]


class Neighbour(_Predicate):
    """The token `offset` places away (-1: the previous one) satisfies `inner`."""

    kind: Literal["neighbour"] = "neighbour"
    offset: int = Field(ge=-3, le=3)
    inner: Predicate

    def evaluate(self, view: TokenView) -> list[bool]:
        inner = self.inner.evaluate(view)
        n = len(inner)
        return [0 <= i + self.offset < n and inner[i + self.offset] for i in range(n)]

    def describe(self) -> str:
        where = {-1: "right after", 1: "right before"}.get(
            self.offset, f"{abs(self.offset)} tokens {'after' if self.offset < 0 else 'before'}"
        )
        return f"tokens {where} {self.inner.describe()}"

    def size(self) -> int:
        return 1 + self.inner.size()


class InsideQuotes(_Predicate):
    """Tokens inside a pair of double quotes (the quoted text, not the quotes)."""

    kind: Literal["inside_quotes"] = "inside_quotes"

    def evaluate(self, view: TokenView) -> list[bool]:
        inside = [(m.start(1), m.end(1)) for m in _QUOTED.finditer(view.text)]
        return _overlapping(view, inside)

    def describe(self) -> str:
        return "the words inside double quotation marks"


class AfterLinePrefix(_Predicate):
    """Tokens on a line that starts (after indentation) with `prefix`, after it, up to
    the first character of `until` when given."""

    kind: Literal["after_line_prefix"] = "after_line_prefix"
    prefix: str = Field(min_length=1)
    until: str = ""

    def evaluate(self, view: TokenView) -> list[bool]:
        stop = f"[^{re.escape(self.until)}\\n]*" if self.until else "[^\\n]*"
        line = re.compile(rf"^[ \t]*{re.escape(self.prefix)}[ \t]*({stop})", re.MULTILINE)
        return _overlapping(view, [(m.start(1), m.end(1)) for m in line.finditer(view.text)])

    def describe(self) -> str:
        until = f' up to any "{self.until}"' if self.until else ""
        return f'the words after "{self.prefix}" at the start of a line{until}'


# A straight quote opens a quotation when a word (or a bracket, an apostrophe) follows
# it and none precedes it; any other quote closes one. Telling them apart by where they
# stand, not by counting, reads a window that starts inside a quotation correctly. A
# quotation still open where the text ends runs to the end: windows of longer texts
# often stop before the closing quote.
_QUOTED = re.compile(r"(?:“|(?<!\w)\"(?=[\w'(\[]))([^\"“”]*?)\s*(?:[\"”]|\Z)")


def _overlapping(view: TokenView, spans: list[tuple[int, int]]) -> list[bool]:
    """Per token, whether its non-space characters overlap one of the spans."""
    out = []
    for start, token in zip(view.starts, view.tokens, strict=True):
        lo = start + len(token) - len(token.lstrip())
        hi = start + len(token.rstrip())
        out.append(any(s < hi and lo < e for s, e in spans if s < e))
    return out


class Not(_Predicate):
    kind: Literal["not"] = "not"
    inner: Predicate

    def evaluate(self, view: TokenView) -> list[bool]:
        return [not v for v in self.inner.evaluate(view)]

    def describe(self) -> str:
        return f"tokens other than {self.inner.describe()}"

    def size(self) -> int:
        return 1 + self.inner.size()


class AnyOf(_Predicate):
    kind: Literal["any"] = "any"
    parts: tuple[Predicate, ...] = Field(min_length=2)

    def evaluate(self, view: TokenView) -> list[bool]:
        results = [p.evaluate(view) for p in self.parts]
        return [any(values) for values in zip(*results, strict=True)]

    def describe(self) -> str:
        return "; or ".join(p.describe() for p in self.parts)

    def size(self) -> int:
        return sum(p.size() for p in self.parts)


class AllOf(_Predicate):
    kind: Literal["all"] = "all"
    parts: tuple[Predicate, ...] = Field(min_length=2)

    def evaluate(self, view: TokenView) -> list[bool]:
        results = [p.evaluate(view) for p in self.parts]
        return [all(values) for values in zip(*results, strict=True)]

    def describe(self) -> str:
        return " that are also ".join(p.describe() for p in self.parts)

    def size(self) -> int:
        return sum(p.size() for p in self.parts)


Predicate = Annotated[
    TokenIn
    | TokenRegex
    | WordIn
    | WordRegex
    | Preceded
    | Neighbour
    | Not
    | InsideQuotes
    | AfterLinePrefix
    | AnyOf
    | AllOf,
    Field(discriminator="kind"),
]

for _model in (Neighbour, Not, AnyOf, AllOf):
    _model.model_rebuild()


class PredicateHolder(BaseModel):
    """Wraps a predicate so it can be validated from JSON on its own."""

    predicate: Predicate
