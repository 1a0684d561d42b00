"""What the client hands back besides validated models: text with log-probabilities."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TokenLogprobs:
    """One generated token, its log-probability, and the server's top alternatives
    (token text -> log-probability; the highest kept when two share a text)."""

    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)

    def probabilities(self, candidates: list[str]) -> dict[str, float]:
        """Probability of each candidate token text at this position (0 when it is not
        among the top alternatives), e.g. the digits "0".."9" for an expected value."""
        return {c: math.exp(self.top[c]) if c in self.top else 0.0 for c in candidates}


@dataclass(frozen=True)
class TextWithLogprobs:
    text: str
    tokens: list[TokenLogprobs]
