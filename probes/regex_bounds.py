"""How long a text a regex may search without a timer. The regex module's timeout costs
a few microseconds per call, more than a typical search of one token, and the predicate
language runs millions of those; a pattern whose backtracking its shape bounds needs no
timer on a text short enough.

From each starting point a backtracking matcher tries at most the pattern's number of
ways to match: the product, along the pattern, of each repetition's iteration counts
and each alternation's alternatives (summed). That is finite only when no repetition
holds another repetition or alternatives ((a+)+ and (a|aa)+ match the same text in
exponentially many ways) and there are no backreferences. A text of n characters then
costs at most n times that many steps; texts up to the length where this reaches STEPS
run untimed, anything else is timed.
"""

from __future__ import annotations

# The stdlib's own regex parser: there is no public one (nor stubs for it).
import re._parser as sre_parse  # type: ignore[import-not-found]
from typing import Any

STEPS = 2**22  # a few tenths of a second of backtracking at worst
LONGEST = 2**16  # longer texts are always timed: the timer costs little next to them
LONGEST_PATTERN = 2000  # longer patterns too: their searches cost far more than the timer
_PLAIN = {"LITERAL", "NOT_LITERAL", "ANY", "IN", "AT", "CATEGORY"}
_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}


def untimed_length(pattern: str, flags: int) -> int:
    """The longest text `pattern` may search without a timer: 0 when its shape bounds
    nothing (or the stdlib cannot read it, e.g. syntax only the regex module knows)."""
    if len(pattern) > LONGEST_PATTERN:
        return 0
    try:
        ways = _ways(sre_parse.parse(pattern, flags))
    except Exception:  # any pattern it cannot read is simply timed
        return 0
    if ways is None:
        return 0
    lo, hi = 0, LONGEST
    while lo < hi:  # the longest n with n * ways(n) <= STEPS (ways grows with n)
        n = (lo + hi + 1) // 2
        steps = n * sum(c * (n + 1) ** degree for degree, c in enumerate(ways))
        lo, hi = (n, hi) if steps <= STEPS else (lo, n - 1)
    return lo


# The number of ways is a polynomial in n + 1 (an unbounded repetition of one character
# can run 0 to n times): its coefficients, lowest degree first.
Polynomial = tuple[int, ...]
_ONE: Polynomial = (1,)


def _ways(items: Any) -> Polynomial | None:
    """How many ways a parsed pattern can match from one starting point, at most; None
    when no bound follows from its shape."""
    product = _ONE
    for op, arg in items:
        ways = _item_ways(str(op), arg)
        if ways is None:
            return None
        product = _times(product, ways)
    return product


def _item_ways(name: str, arg: Any) -> Polynomial | None:
    if name in _PLAIN:
        return _ONE
    if name == "SUBPATTERN":
        return _ways(arg[-1])
    if name in ("ASSERT", "ASSERT_NOT"):
        return _ways(arg[1])
    if name == "ATOMIC_GROUP":
        return _ways(arg)
    if name == "BRANCH":
        total: Polynomial = ()
        for alternative in arg[1]:
            ways = _ways(alternative)
            if ways is None:
                return None
            total = _plus(total, ways)
        return total
    if name in _REPEATS:
        low, high, body = arg
        if _ways(body) != _ONE:  # (a+)+, (a|aa)+, (a?)*: exponentially many ways
            return None
        return (0, 1) if high >= LONGEST else (high - low + 1,)
    return None  # backreferences, conditionals


def _plus(a: Polynomial, b: Polynomial) -> Polynomial:
    longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
    return tuple(c + (shorter[i] if i < len(shorter) else 0) for i, c in enumerate(longer))


def _times(a: Polynomial, b: Polynomial) -> Polynomial:
    if b == _ONE:
        return a
    out = [0] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return tuple(out)
