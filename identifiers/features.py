"""Feature ids: an index given as text (or a planted feature's id), the check that an
index is a feature of the dictionary, and feature selections ("0:200" a range, "3,7,9" a
list, "sample:8" a seeded sample of the features that fire in the evidence), as the CLI
and the HTTP service take them."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from errors import UserError


def unknown_feature(features: Iterable[int], n_features: int) -> str | None:
    """Why the first of `features` outside 0..n_features-1 is not a feature, or None when
    every one is (callers raise their own error with it)."""
    for f in features:
        if not 0 <= f < n_features:
            return f"unknown feature {f}: valid indices are 0..{n_features - 1}"
    return None


def parse_feature(text: str, names: Sequence[str] | None = None) -> int:
    """A feature given as its index ("12"), or as a planted feature's id when `names`
    (the planted ids) are given. Raises ValueError saying what to give instead. Whether
    the index is in range is `unknown_feature`'s to say."""
    given = text.strip()
    if given.isascii() and given.isdigit():
        return int(given)
    if names is None:
        raise UserError(
            f"{text!r} is not a feature index; give a number (ids such as word-love "
            "name planted features: add --planted)"
        )
    if given not in names:
        raise UserError(
            f"unknown planted feature {text!r}; give an index 0..{len(names) - 1} "
            f"or one of: {', '.join(names)}"
        )
    return list(names).index(given)


SYNTAX = "give a range (0:200), a list (3,7,9) or a sample (sample:8)"


@dataclass(frozen=True)
class FeatureSelection:
    features: list[int]  # the features to explain, in the given order
    silent: list[int]  # listed one by one but never fired in the evidence: left out


def select_features(
    spec: str,
    alive: list[int],
    n_features: int,
    names: Sequence[str] | None = None,
    seed: int = 0,
) -> FeatureSelection:
    """The features `spec` names that fired in the evidence (`alive`). A list may name
    planted features by id when `names` are given. Raises UserError, naming the valid
    syntax, for a malformed spec, a negative or reversed range, an empty sample, or an
    index outside 0..n_features-1 (never a silent clip: Python's slicing would take
    "-3:-1" for the last features and "10:5" for none). `seed` draws sample:N."""
    given = spec.strip()
    if given.startswith("sample:"):
        count = _count(given.removeprefix("sample:"), given)
        drawn = random.Random(seed).sample(alive, min(count, len(alive)))
        return FeatureSelection(sorted(drawn), [])
    firing = set(alive)
    if ":" in given:  # a range means its firing features: the rest go unmentioned
        return FeatureSelection([f for f in _range(given, n_features) if f in firing], [])
    picked = _listed(given, names)
    if problem := unknown_feature(picked, n_features):
        raise UserError(problem)
    return FeatureSelection(
        [f for f in picked if f in firing], [f for f in picked if f not in firing]
    )


def _count(text: str, spec: str) -> int:
    """The N of sample:N: a whole number of at least 1."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise UserError(f"{spec!r} is not a sample: give sample:N, N at least 1 (sample:8)")
    return int(text)


def _range(spec: str, n_features: int) -> list[int]:
    """start:end, either end left open (":100", "100:"), end exclusive."""
    start_text, end_text = (part.strip() for part in spec.split(":", 1))
    bounds = []
    for text, default in ((start_text, 0), (end_text, n_features)):
        if not text:
            bounds.append(default)
        elif text.isascii() and text.isdigit():
            bounds.append(int(text))
        else:
            raise UserError(
                f"{spec!r} is not a feature range: give two indices, 0 or more, the start "
                "below the end (0:200; 200: for the rest)"
            )
    start, end = bounds
    if start >= end:
        raise UserError(f"{spec!r} is an empty range: the start must be below the end (5:10)")
    if end > n_features:
        raise UserError(
            f"{spec!r} goes past the last feature: valid indices are 0..{n_features - 1} "
            f"(0:{n_features}, or {start}: for the rest)"
        )
    return list(range(start, end))


def _listed(spec: str, names: Sequence[str] | None) -> list[int]:
    """3,7,9 (or planted ids, word-love,digits), repeats dropped, order kept."""
    parts = [part for part in spec.split(",") if part.strip()]
    if not parts:
        raise UserError(f"{spec!r} names no features; {SYNTAX}")
    try:
        return list(dict.fromkeys(parse_feature(part, names) for part in parts))
    except UserError as err:
        raise UserError(f"{err}; {SYNTAX}") from None
