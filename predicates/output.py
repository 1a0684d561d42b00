"""An output claim checked against steering: a predicate read as "the feature promotes
the next tokens this holds for", judged on one steering experiment's candidates
(`probes.promotions`).

- precision: of the candidates the claim names, the share steering promotes; a listed
  word (`TokenIn`, `WordIn`) that is no candidate at all counts as named and not
  promoted (the claim names a token steering never made plausible);
- recall: of the promoted tokens, the share the claim names.

A candidate is judged as the one token it is (the predicate sees a one-token text), so
claims about tokens and words work and claims about context ("after a comma") name
nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from predicates.base import TokenView, _Listed, normal
from predicates.language import AnyOf, Predicate
from probes.promotions import Promotions


@dataclass(frozen=True)
class ClaimFit:
    named: int  # candidates (and unseen listed words) the claim names
    hits: int  # of them, promoted
    promoted: int  # tokens steering promoted

    @property
    def precision(self) -> float:
        return self.hits / self.named if self.named else 0.0

    @property
    def recall(self) -> float:
        return self.hits / self.promoted if self.promoted else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def names_token(predicate: Predicate, token: str) -> bool:
    """Whether the claim names `token` as a next token."""
    return predicate.evaluate(TokenView.of([token]))[0]


def claim_fit(predicate: Predicate, promotions: Promotions) -> ClaimFit:
    promoted = {c.token_id for c in promotions.promoted}
    named = [c for c in promotions.candidates if names_token(predicate, c.token)]
    seen = {normal(c.token) for c in promotions.candidates}
    unseen = [w for w in _listed_words(predicate) if normal(w) not in seen]
    return ClaimFit(
        named=len(named) + len(unseen),
        hits=sum(c.token_id in promoted for c in named),
        promoted=len(promoted),
    )


def _listed_words(predicate: Predicate) -> list[str]:
    """The words a claim lists outright (in a list, or a list among alternatives)."""
    if isinstance(predicate, _Listed):
        return list(predicate.words)
    if isinstance(predicate, AnyOf):
        return [w for part in predicate.parts for w in _listed_words(part)]
    return []


_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])")


def named_in(predicate: Predicate, text: str) -> int:
    """How many pieces (words, punctuation marks) of a generated `text` the claim names:
    how a continuation shows the tokens a feature promotes."""
    pieces = _PIECE.findall(text)
    return sum(predicate.evaluate(TokenView.of(pieces))) if pieces else 0
