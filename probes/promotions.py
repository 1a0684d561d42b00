"""What steering a feature does to the next token, over several texts: the tokens it
makes more likely, told apart from those it leaves alone.

A token is a *candidate* when some text makes it at least PLAUSIBLE_PROB likely, clean or
steered (tokens nobody would predict are not claims anyone can check). Its *gain* is the
change of its log-probability, steered minus clean, averaged over the texts. The
*boosted* tokens are the BOOSTED_TOP of largest gain among those at least twice as
likely on average, and the *promoted* ones the first PROMOTED_TOP of them: a claim
should name the promoted tokens, and only boosted ones. `predicates.output` checks a
claim against this.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from probes.steering import SteeringError, SteeringResult

PROMOTED_TOP = 10  # the promoted tokens one steering experiment names
# The tokens a claim may name without being wrong: strong steering flattens the
# distribution, and then hundreds of tokens (most capitalised words, on SmolLM2) are
# twice as likely; only the top of them are what the feature promotes.
BOOSTED_TOP = 5 * PROMOTED_TOP
MIN_GAIN = math.log(2)  # promoted: at least twice as likely, averaged over the texts


@dataclass(frozen=True)
class Candidate:
    token: str  # decoded
    token_id: int
    gain: float  # mean change of log-probability over the texts, nats


@dataclass(frozen=True)
class Promotions:
    texts: int
    kl: float  # median KL(steered || clean) after the texts, nats
    candidates: tuple[Candidate, ...]  # largest gain first
    promoted_count: int  # the first this many candidates are the promoted ones
    boosted_count: int  # the first this many are the boosted ones (>= promoted_count)

    @property
    def boosted(self) -> tuple[Candidate, ...]:
        """The BOOSTED_TOP candidates of largest gain made at least twice as likely."""
        return self.candidates[: self.boosted_count]

    @property
    def promoted(self) -> tuple[Candidate, ...]:
        return self.candidates[: self.promoted_count]

    @property
    def promoted_tokens(self) -> list[str]:
        return [c.token for c in self.promoted]


def promotions_of(
    results: Sequence[SteeringResult],
    decode: Callable[[int], str | None],
    min_gain: float = MIN_GAIN,
) -> Promotions:
    """The promotions of steering runs made with `keep_vocabulary`; `decode` gives a
    token id's text, or None for ids that are no token (a padded LM head's)."""
    if not results:
        raise SteeringError("no steering results to read promotions from")
    shifts = [r.vocabulary for r in results]
    if any(s is None for s in shifts):
        raise SteeringError("steer the texts with keep_vocabulary=True to read promotions")
    delta_NV = torch.stack([s.delta_V for s in shifts if s is not None])
    plausible_V = torch.stack([s.plausible_V for s in shifts if s is not None]).any(dim=0)
    gain_V = delta_NV.mean(dim=0)
    ids = plausible_V.nonzero().flatten()
    ranked = ids[gain_V[ids].argsort(descending=True, stable=True)].tolist()
    candidates = []
    for token_id in ranked:
        token = decode(token_id)
        if token is not None:
            candidates.append(Candidate(token, token_id, float(gain_V[token_id])))
    boosted = min(BOOSTED_TOP, sum(c.gain >= min_gain for c in candidates))  # a prefix
    return Promotions(
        texts=len(results),
        kl=statistics.median(r.kl_last for r in results),
        candidates=tuple(candidates),
        promoted_count=min(PROMOTED_TOP, boosted),
        boosted_count=boosted,
    )


# The clamp steering experiments use when they read a feature's output side: this many
# times its largest activation in the explain split, at every token. Measured on SmolLM2
# (layers.6, the default SAE): at 2x, clamped features promote coherent tokens on most
# texts while the continuations stay fluent.
STEER_TIMES = 2.0
