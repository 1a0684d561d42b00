"""An output claim checked against steering: a predicate read as "the feature promotes
the next tokens this holds for", judged on one steering experiment's candidates
(`probes.promotions`).

- precision: of the candidates the claim names, the share among the tokens steering
  boosted most (at least twice as likely, the top 50); a listed word (`TokenIn`,
  `WordIn`) that is no candidate at all counts as named and not boosted (the claim
  names a token steering never made likely);
- recall: of the top promoted tokens, the share the claim names;
both counted in words: " Friend", "friend" and "friends" are two words, not three tokens.

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
    named: int  # words the claim names among the candidates (and unseen listed words)
    hits: int  # of them, boosted (among the top gains, at least twice as likely)
    promoted: int  # words among the top promoted tokens
    recalled: int  # of them, named

    @property
    def precision(self) -> float:
        return self.hits / self.named if self.named else 0.0

    @property
    def recall(self) -> float:
        return self.recalled / self.promoted if self.promoted else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def names_token(predicate: Predicate, token: str) -> bool:
    """Whether the claim names `token` as a next token."""
    return predicate.evaluate(TokenView.of([token]))[0]


def word_of(token: str) -> str:
    """What a claim names a token by: the word as predicates compare it (" Friend" and
    "friend" are one), or the token itself when it is only whitespace."""
    return normal(token) or token


def claim_fit(predicate: Predicate, promotions: Promotions) -> ClaimFit:
    """Counted in words (`word_of`): a word is promoted when one of its tokens is, and
    named when the claim names one of its tokens."""
    promoted = {word_of(c.token) for c in promotions.promoted}
    boosted = {word_of(c.token) for c in promotions.boosted}
    named = {word_of(c.token) for c in promotions.candidates if names_token(predicate, c.token)}
    named |= {normal(w) for w in _listed_words(predicate)}  # listed, whether likely or not
    return ClaimFit(
        named=len(named),
        hits=len(named & boosted),
        promoted=len(promoted),
        recalled=len(named & promoted),
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
