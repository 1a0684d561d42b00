"""How long an explanation is: its words, and how many items it lists.

A good explanation names a concept in about 25 words with a few examples; one that
recites the evidence ("fires on "a", "b", "c", ... and 37 more") is long in items even
when short in words, so the bench reports both.

- `words`: whitespace-separated words of the explanation's text.
- `listed_items`: with a predicate, the total length of every list-valued field named
  `words`, `lemmas` or `examples` anywhere in it (walked as plain JSON, so every
  predicate kind counts, present and future), and of a semantic field's `anchors` the
  few its description names (the field is a class judged by closeness, as a WordNet
  class is by its synsets, and says how many anchors it has); for prose, its quoted
  items ("x", “x”, and 'x' within a listing of such) plus N for every "N more".
"""

from __future__ import annotations

import re
from typing import Any

from predicates.semantic import SHOWN

LISTED_FIELDS = frozenset({"words", "lemmas", "examples"})
SHOWN_FIELDS = {"anchors": SHOWN}  # fields that list only the items a description names

_DOUBLE_QUOTED = re.compile(r'"[^"\n]*"|“[^”\n]*”')
# 'x' only within a listing of at least two ('a', 'b' or 'c'): a lone 'x' is as often
# an apostrophe's doing (the dogs' 'bone') as an item.
_SINGLE = r"(?<!\w)'[^'\n]+'(?!\w)"
_SEPARATOR = r"\s*(?:,\s*(?:(?:and|or)\s+)?|\s(?:and|or)\s+)"
_SINGLE_LISTING = re.compile(rf"{_SINGLE}(?:{_SEPARATOR}{_SINGLE})+")
_SINGLE_ITEM = re.compile(_SINGLE)
_MORE = re.compile(r"\b(\d[\d,]*)\s+more\b", re.IGNORECASE)


def words(text: str) -> int:
    """Whitespace-separated words of `text`."""
    return len(text.split())


def listed_items(text: str, predicate: dict[str, Any] | None) -> int:
    """How many items the explanation lists: from its predicate when it has one, else
    from its prose (see the module docstring)."""
    if predicate is not None:
        return _listed_in(predicate)
    return _quoted_items(text) + _more_items(text)


def _listed_in(value: Any) -> int:
    """The total length of the listed fields anywhere in a JSON value."""
    if isinstance(value, dict):
        return sum(_listed_length(k, v) + _listed_in(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(_listed_in(v) for v in value)
    return 0


def _listed_length(key: str, value: Any) -> int:
    if not isinstance(value, list | tuple):
        return 0
    if key in SHOWN_FIELDS:
        return min(len(value), SHOWN_FIELDS[key])
    return len(value) if key in LISTED_FIELDS else 0


def _quoted_items(text: str) -> int:
    doubles = _DOUBLE_QUOTED.findall(text)
    # Blanked first, so quotes inside "it's" or "'s" items never pair up as 'x'.
    rest = _DOUBLE_QUOTED.sub(" ", text)
    singles = sum(
        len(_SINGLE_ITEM.findall(listing.group())) for listing in _SINGLE_LISTING.finditer(rest)
    )
    return len(doubles) + singles


def _more_items(text: str) -> int:
    """N for every "and N more" (or "N more") in the text."""
    return sum(int(m.group(1).replace(",", "")) for m in _MORE.finditer(text))
