"""Regexes that run under a time limit: every rule regex a user can write (planted
features' rules, predicates read from stored explanations or HTTP) runs through here.

Python's `re` backtracks without bound: a rule such as `(a|aa)+$` takes years on a
64-character text. The `regex` module stops a match that runs past its `timeout=`; a
rule that does is refused with `RegexTimeLimitError`, which names it and says how to fix
it. (`google-re2` would never backtrack, but it cannot express the lookarounds that the
shipped rules use.) The timer costs more than a search of one token, so texts short
enough for the pattern's shape to bound its work go untimed (probes.regex_bounds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import regex

from errors import UserError
from probes.regex_bounds import untimed_length

TIME_LIMIT_S = 1.0  # per call on a short text: a sound rule takes microseconds
PER_CHAR_S = 1e-6  # more for long texts, so that a sound rule is never cut short
PROBE_LIMIT_S = 0.1  # per stress text when a rule is checked before it is used
_PROBE_LENGTH = 64  # an exponential rule needs far longer than PROBE_LIMIT_S on this
_PROBE_CHARS = "a A1 _.-,\t\n"  # besides the characters the rule itself names
_FIX = (
    "it backtracks catastrophically (a repetition inside a repetition such as (a+)+, "
    "or alternatives that overlap such as (a|aa)+); rewrite it so that each character "
    "can be matched in only one way, e.g. a+ for (a+)+"
)


T = TypeVar("T")


class RegexTimeLimitError(UserError):
    """A regex ran past its time limit; the message names it and says how to fix it."""


@dataclass(frozen=True, eq=False)
class LimitedPattern:
    """A compiled regex whose every search runs under the time limit."""

    shown: str  # the rule as its author wrote it, for error messages
    compiled: regex.Pattern[str]
    untimed: int  # texts up to this long cannot run long: they skip the timer
    groupindex: dict[str, int]  # named groups (read for every text: kept, not rebuilt)

    def search(self, text: str, pos: int = 0, endpos: int | None = None) -> regex.Match[str] | None:
        if endpos is None:
            endpos = len(text)
        if endpos - pos <= self.untimed:
            return self.compiled.search(text, pos, endpos)
        try:
            # positional arguments: keyword parsing costs more than a short search
            return self.compiled.search(text, pos, endpos, None, False, _limit(text))
        except TimeoutError:
            return self._again(
                lambda: self.compiled.search(text, pos, endpos, None, False, _limit(text)), text
            )

    def fullmatch(self, text: str) -> regex.Match[str] | None:
        if len(text) <= self.untimed:
            return self.compiled.fullmatch(text)
        try:
            return self.compiled.fullmatch(text, None, None, None, False, _limit(text))
        except TimeoutError:
            return self._again(
                lambda: self.compiled.fullmatch(text, None, None, None, False, _limit(text)), text
            )

    def finditer(self, text: str) -> Iterator[regex.Match[str]]:
        """Every match, found before the first is returned (the limit covers the whole
        scan, so the caller's work between matches must not count against it)."""
        if len(text) <= self.untimed:
            return self.compiled.finditer(text)
        try:
            found = list(self.compiled.finditer(text, timeout=_limit(text)))
        except TimeoutError:
            found = self._again(
                lambda: list(self.compiled.finditer(text, timeout=_limit(text))), text
            )
        return iter(found)

    def _again(self, run: Callable[[], T], text: str) -> T:
        """A timed-out search tried once more before the rule is refused: the limit is
        wall time, and a stalled process (a busy core, swapping) must not be taken for a
        rule that backtracks; one that does runs past the limit again."""
        try:
            return run()
        except TimeoutError:
            raise self._refused(text) from None

    def _refused(self, text: str) -> RegexTimeLimitError:
        return RegexTimeLimitError(
            f"the regex {self.shown!r} ran past its time limit ({_limit(text):.1f} s) on a "
            f"{len(text)}-character text: {_FIX}"
        )


def _limit(text: str) -> float:
    return TIME_LIMIT_S + PER_CHAR_S * len(text)


@lru_cache(maxsize=4096)
def limited(pattern: str, flags: int = 0, shown: str | None = None) -> LimitedPattern:
    """`pattern` compiled to run under the time limit (`flags`: the `re` flag bits, which
    the regex module shares). Raises `regex.error` when it does not compile."""
    compiled = regex.compile(pattern, flags)
    return LimitedPattern(
        pattern if shown is None else shown,
        compiled,
        untimed_length(pattern, flags),
        dict(compiled.groupindex),
    )


def check_backtracking(pattern: LimitedPattern) -> None:
    """Refuse a rule that backtracks catastrophically, before it runs on real text: it
    is searched in stress texts (one character repeated, then one that breaks the match)
    built from the characters it names. Catches the usual culprits, not every one: the
    time limit still guards every real search. A pattern whose shape bounds its work on
    texts that long needs no probe."""
    if pattern.untimed > _PROBE_LENGTH:
        return
    chars = sorted(set(_PROBE_CHARS) | {c for c in pattern.shown if c.isprintable()})
    for text in (c * _PROBE_LENGTH + "\x00" for c in chars):
        try:
            pattern.compiled.search(text, timeout=PROBE_LIMIT_S)
        except TimeoutError:
            raise RegexTimeLimitError(
                f"the regex {pattern.shown!r} takes over {PROBE_LIMIT_S:g} s on a "
                f"{len(text)}-character text ({text[:8]!r}...): {_FIX}"
            ) from None
