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
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, Field

from predicates.base import (
    QUOTES,
    TokenView,
    _compile,
    _Listed,
    _overlapping,
    _Pattern,
    _Predicate,
    _TokenLocal,
    _WordLocal,
    normal,
)
from predicates.context import CodeLike, LineStart, SentenceStart
from predicates.lexical import DerivedFrom, FunctionWord, LemmaIn, WordClass
from predicates.semantic import SemanticField

__all__ = ["QUOTES", "TokenView", "normal"]


class TokenIn(_Listed, _TokenLocal):
    kind: Literal["token_in"] = "token_in"
    _noun: ClassVar[str] = "token"

    def holds_for_token(self, token: str) -> bool:
        return normal(token, self.case_sensitive) in self._set


class TokenRegex(_Pattern, _TokenLocal):
    """The token (without surrounding whitespace) matches `pattern` entirely."""

    kind: Literal["token_regex"] = "token_regex"
    _unnamed: ClassVar[str] = "tokens matching"

    def holds_for_token(self, token: str) -> bool:
        body = token.strip()
        return bool(body) and self._compiled.fullmatch(body) is not None


class BlankToken(_TokenLocal):
    """A token of whitespace only, of one shape: every other predicate strips a token's
    surrounding whitespace, so features of spacing (the second space after a sentence,
    indentation, line breaks) need their own."""

    kind: Literal["blank"] = "blank"
    shape: Literal["space", "newline", "tab"]

    def holds_for_token(self, token: str) -> bool:
        if not token or token.strip():
            return False
        if self.shape == "newline":
            return "\n" in token
        if self.shape == "tab":
            return "\t" in token and "\n" not in token
        return set(token) == {" "}

    def describe(self) -> str:
        return {
            "space": "tokens of spaces only (such as the second space between sentences)",
            "newline": "line breaks (whitespace tokens holding a newline)",
            "tab": "tabs (whitespace tokens holding a tab)",
        }[self.shape]


class WordIn(_Listed, _WordLocal):
    """The word the token belongs to (all its tokens) is one of `words`."""

    kind: Literal["word_in"] = "word_in"
    _noun: ClassVar[str] = "word"

    def holds_for_word(self, word: str) -> bool:
        return normal(word, self.case_sensitive) in self._set


class WordRegex(_Pattern, _WordLocal):
    """The word the token belongs to matches `pattern` entirely."""

    kind: Literal["word_regex"] = "word_regex"
    _unnamed: ClassVar[str] = "words matching"

    def holds_for_word(self, word: str) -> bool:
        return self._compiled.fullmatch(word) is not None


LOOK_BACK = 40  # characters `Preceded` reads before a word


class Preceded(_Pattern):
    """The text right before the token's word ends with a match of `pattern` (e.g. "of "
    for the word after "of")."""

    kind: Literal["preceded"] = "preceded"
    _unnamed: ClassVar[str] = "words right after"

    def evaluate(self, view: TokenView) -> list[bool]:
        compiled = _compile(f"(?:{self.pattern})$", self.pattern)
        return [  # searched in the few characters before the word, not the whole text
            span is not None
            and compiled.search(view.text, max(0, span[0] - LOOK_BACK), span[0]) is not None
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


class Tiered(_Predicate):
    """Fires strongly where `strong` holds, weakly where only `weak` does, and faintly
    where only `faint` does (a semantic field around the core: it fires on a few of
    those words' occurrences): real features have a core and a periphery."""

    kind: Literal["tiered"] = "tiered"
    strong: Predicate
    weak: Predicate | None = None
    faint: Predicate | None = None

    @property
    def tiers(self) -> tuple[Predicate, ...]:
        """The tiers it has, strongest first."""
        return tuple(t for t in (self.strong, self.weak, self.faint) if t is not None)

    def evaluate(self, view: TokenView) -> list[bool]:
        return [any(column) for column in zip(*(t.evaluate(view) for t in self.tiers), strict=True)]

    def levels(self, view: TokenView) -> list[float]:
        """Per token: 1.0 where it fires strongly, WEAK where only weakly, FAINT where
        only faintly, else 0."""
        out = [0.0] * len(view.tokens)
        for tier, level in ((self.faint, FAINT), (self.weak, WEAK), (self.strong, 1.0)):
            if tier is not None:
                out = [level if v else o for v, o in zip(tier.evaluate(view), out, strict=True)]
        return out

    def describe(self) -> str:
        said = f"{self.strong.describe()} (strongly)"
        if self.weak is not None:
            said += f"; more weakly, {self.weak.describe()}"
        if self.faint is not None:
            said += f"; faintly, {self.faint.describe()}"
        return said

    def size(self) -> int:
        return sum(t.size() for t in self.tiers)


WEAK = 0.4  # a weak firing's level, as a share of a strong one
# A faint one's: a field's words fire on few of their occurrences (on 40 real features,
# simulation with field words at 0.4, 0.15, 0.1 and 0: 0.677, 0.735, 0.742, 0.732).
FAINT = 0.1


def levels(predicate: Predicate, view: TokenView) -> list[float]:
    """Per token, how strongly the predicate says the feature fires (0 to 1)."""
    if isinstance(predicate, Tiered):
        return predicate.levels(view)
    return [1.0 if v else 0.0 for v in predicate.evaluate(view)]


Predicate = Annotated[
    TokenIn
    | TokenRegex
    | BlankToken
    | WordIn
    | WordRegex
    | Preceded
    | Neighbour
    | Not
    | InsideQuotes
    | AfterLinePrefix
    | WordClass
    | LemmaIn
    | DerivedFrom
    | FunctionWord
    | SemanticField
    | SentenceStart
    | LineStart
    | CodeLike
    | Tiered
    | AnyOf
    | AllOf,
    Field(discriminator="kind"),
]

for _model in (Neighbour, Not, AnyOf, AllOf, Tiered):
    _model.model_rebuild()


class PredicateHolder(BaseModel):
    """Wraps a predicate so it can be validated from JSON on its own."""

    predicate: Predicate


def as_dict(predicate: Predicate) -> dict[str, object]:
    """A predicate as JSON-ready data (how explanations and hypotheses carry it)."""
    return dict(PredicateHolder(predicate=predicate).model_dump()["predicate"])


def from_dict(data: dict[str, object]) -> Predicate:
    """The predicate `as_dict` wrote (pydantic's ValidationError when it is malformed)."""
    return PredicateHolder.model_validate({"predicate": data}).predicate
