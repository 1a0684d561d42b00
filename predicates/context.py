"""Predicates about where a token stands rather than what it is: the first word of a
sentence or of a line, and code (Python identifiers, calls, doctest lines, backticks)."""

from __future__ import annotations

import re
from typing import Literal

from predicates.base import TokenView, _overlapping, _Predicate

# Matched against the end of the text before a word (its last TAIL characters).
_SENTENCE_END = re.compile(r"(?:[.!?][\"')\]]*\s+|\n[ \t]*\n\s*)\Z")
_LINE_START = re.compile(r"\n[ \t]*\Z")
TAIL = 40
# Spans that read as code in prose and docstrings.
_CODE = re.compile(
    r"`[^`\n]+`"  # inline code
    r"|^[ \t]*(?:>>>|\.\.\.)[ \t].*$"  # doctest lines
    r"|\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\b"  # dotted names: os.path.join
    r"|\b[A-Za-z]*_\w*"  # snake_case and _private names
    r"|\b[A-Za-z_]\w*\((?:[^()\n]*)\)",  # calls: f(x)
    re.MULTILINE,
)


class SentenceStart(_Predicate):
    """The first word of a sentence: at the start of the text, after a sentence's end
    (. ! ? and a space), or after a blank line."""

    kind: Literal["sentence_start"] = "sentence_start"

    def evaluate(self, view: TokenView) -> list[bool]:
        return _first_word_where(view, _SENTENCE_END)

    def describe(self) -> str:
        return "the first word of a sentence"


class LineStart(_Predicate):
    """The first word on a line (after any indentation)."""

    kind: Literal["line_start"] = "line_start"

    def evaluate(self, view: TokenView) -> list[bool]:
        return _first_word_where(view, _LINE_START)

    def describe(self) -> str:
        return "the first word on a line"


class CodeLike(_Predicate):
    """Tokens inside code: inline `code`, doctest lines, dotted names, snake_case names
    and calls such as f(x)."""

    kind: Literal["code"] = "code"

    def evaluate(self, view: TokenView) -> list[bool]:
        return _overlapping(view, [m.span() for m in _CODE.finditer(view.text)])

    def describe(self) -> str:
        return "code (names such as os.path or snake_case, calls, >>> lines)"


def _first_word_where(view: TokenView, before: re.Pattern[str]) -> list[bool]:
    """Per token, whether its word is a word whose preceding text matches `before`."""
    out = []
    for span in view.words:
        tail = view.text[max(0, span[0] - TAIL) : span[0]] if span else ""
        at_start = span is not None and span[0] <= TAIL and not view.text[: span[0]].strip()
        out.append(span is not None and (at_start or before.search(tail) is not None))
    return out
