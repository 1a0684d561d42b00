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


@dataclass(frozen=True)
class FeatureSelection:
    features: list[int]  # the features to explain, in the given order
    silent: list[int]  # listed by number but never fired in the evidence: left out


def select_features(spec: str, alive: list[int], n_features: int) -> FeatureSelection:
    """The features `spec` names that fired in the evidence (`alive`). Raises UserError
    for a listed index outside 0..n_features-1 or a malformed spec."""
    spec = spec.strip()
    try:
        return _select(spec, alive, n_features)
    except UserError:
        raise
    except ValueError as err:  # a number that does not parse
        raise UserError(
            f"{spec!r} is not a feature selection: give a range (0:200), a list (3,7,9) "
            "or a sample (sample:8)"
        ) from err


def _select(spec: str, alive: list[int], n_features: int) -> FeatureSelection:
    if spec.startswith("sample:"):
        count = int(spec.removeprefix("sample:"))
        return FeatureSelection(sorted(random.Random(0).sample(alive, min(count, len(alive)))), [])
    firing = set(alive)
    if ":" in spec:
        lo, hi = (int(part) if part else None for part in spec.split(":", 1))
        return FeatureSelection([f for f in range(n_features)[lo:hi] if f in firing], [])
    picked = [int(part) for part in spec.split(",") if part.strip()]
    if problem := unknown_feature(picked, n_features):
        raise UserError(problem)
    return FeatureSelection(
        [f for f in picked if f in firing], [f for f in picked if f not in firing]
    )
