"""Output scorers: an explanation's claim about what the feature does to the next token,
checked by steering the feature on held-out texts (the score split's quiet contexts,
which no explainer read), clamped at `probes.promotions.STEER_TIMES` times its largest
activation.

- `output` (predicates only): precision and recall of the promoted tokens the output
  predicate names (`predicates.output.claim_fit`), scored as their F1;
- `output-pick` (prose or predicate; Gur-Arieh et al. 2025): the judge gets the output
  claim and the greedy continuations of a few prompts under several steerings, this
  feature's and DISTRACTORS other features', and picks the one the claim describes.
  Score: the probability it gives the right one, averaged over ROUNDS rounds with other
  distractors (chance: 1 / (DISTRACTORS + 1)).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Sequence

from evals.core import Explained, Judge, JudgeUnavailable, Score, ScoringSet
from evals.judges.predicate import PredicateJudge
from evals.scorers.base import Outcome, run_scorer, shuffled
from predicates.language import from_dict
from predicates.output import claim_fit
from probes.evidence.store import Example
from probes.probe_runner import ProbeRunner
from probes.promotions import STEER_TIMES, Promotions
from probes.steering import Steering

TEXTS = 8  # held-out texts steered per feature (`output`)
TEXT_TOKENS = 32  # each cut to its first tokens
PROMPTS = 4  # prompts continued per option (`output-pick`)
PROMPT_TOKENS = 24
CONTINUATION_TOKENS = 16
DISTRACTORS = 2  # other features per round (Gur-Arieh et al.: 3 options)
ROUNDS = 2
# Features whose steering a scorer keeps: every explainer of a feature, and its floor
# (scored once all features are), share one.
_REMEMBERED = 128


def held_out_texts(examples: ScoringSet, n: int, tokens: int) -> list[str]:
    """The first `n` quiet held-out contexts, each cut to `tokens` tokens."""
    texts = [_cut(e, tokens) for e in examples.non_activating]
    texts = [t for t in texts if t.strip()][:n]
    if len(texts) < 2:
        raise ValueError(
            f"feature {examples.feature}'s scoring set has {len(texts)} quiet held-out "
            "texts to steer on; it needs at least 2 (raise --non-activating)"
        )
    return texts


def _cut(example: Example, tokens: int) -> str:
    return "".join(example.tokens[:tokens])


MaxAct = Callable[[int], float]  # a feature's largest activation in the explain split


def clamp_of(max_act_of: MaxAct, feature: int) -> Steering:
    max_act = max_act_of(feature)
    if max_act <= 0:
        raise ValueError(
            f"feature {feature} never fired in the explain split: no scale to steer at"
        )
    return Steering(feature, clamp=STEER_TIMES * max_act)


class OutputScorer:
    name = "output"
    reads_output = True

    def __init__(self, runner: ProbeRunner, max_act_of: MaxAct) -> None:
        self.runner = runner
        self.max_act_of = max_act_of
        self._seen: OrderedDict[tuple[int, str], Promotions] = OrderedDict()

    async def score(self, explained: Explained, examples: ScoringSet, judge: Judge) -> Score:
        async def work() -> Outcome:
            if explained.output_predicate is None:
                raise ValueError(
                    f"{explained.explainer} states no output claim as a predicate (prose "
                    "is scored by output-pick)"
                )
            claim = from_dict(explained.output_predicate)
            promotions, ran = await self._promotions(examples)
            fit = claim_fit(claim, promotions)
            return Outcome(
                fit.f1,
                {
                    "precision": fit.precision,
                    "recall": fit.recall,
                    "named": fit.named,
                    "hits": fit.hits,
                    "recalled": fit.recalled,
                    "promoted": promotions.promoted_tokens,
                    "kl": promotions.kl,
                    "texts": promotions.texts,
                },
                probe_texts=ran,
            )

        return await run_scorer(self.name, explained, "predicate", work)

    async def _promotions(self, examples: ScoringSet) -> tuple[Promotions, int]:
        """The feature's promotions on its held-out texts, and how many texts this call
        steered (0 when another explainer's scoring already did)."""
        key = (examples.feature, examples.evidence_id)
        found = self._seen.get(key)
        if found is not None:
            return found, 0
        texts = held_out_texts(examples, TEXTS, TEXT_TOKENS)
        found = await self.runner.promotions(texts, clamp_of(self.max_act_of, examples.feature))
        self._seen[key] = found
        while len(self._seen) > _REMEMBERED:
            self._seen.popitem(last=False)
        return found, len(texts)


class OutputPickScorer:
    name = "output-pick"
    reads_output = True

    def __init__(
        self, runner: ProbeRunner, max_act_of: MaxAct, features: Sequence[int], seed: int = 0
    ) -> None:
        """`features`: those that fire, the distractors are drawn from."""
        self.runner = runner
        self.max_act_of = max_act_of
        self.features = list(features)
        self.seed = seed
        self._seen: OrderedDict[tuple[int, tuple[str, ...]], list[str]] = OrderedDict()

    async def score(self, explained: Explained, examples: ScoringSet, judge: Judge) -> Score:
        async def work() -> Outcome:
            feature = explained.feature
            if explained.output_predicate is None and isinstance(judge, PredicateJudge):
                raise JudgeUnavailable(
                    f"{explained.explainer} states no output predicate to run; prose "
                    "needs an LLM judge"
                )  # before any steering is spent on it
            prompts = held_out_texts(examples, PROMPTS, PROMPT_TOKENS)
            rng = random.Random(f"{self.seed}:{feature}:output-pick")
            others = [f for f in self.features if f != feature]
            if len(others) < DISTRACTORS:
                raise ValueError(f"the dictionary has {len(others)} other firing features")
            ran = 0
            mine, steered = await self._continuations(feature, prompts)
            ran += steered
            right: list[float] = []
            for round_ in range(ROUNDS):
                options = [mine]
                for other in rng.sample(others, DISTRACTORS):
                    theirs, steered = await self._continuations(other, prompts)
                    options.append(theirs)
                    ran += steered
                order_options, order = shuffled(options, f"{self.seed}:{feature}:{round_}")
                probs = await judge.pick_steered(explained, prompts, order_options)
                right.append(probs[order.index(0)])
            return Outcome(
                sum(right) / len(right),
                {
                    "rounds": right,
                    "chance": 1 / (DISTRACTORS + 1),
                    "prompts": prompts,
                    "continuations": mine,
                },
                probe_texts=ran,
            )

        return await run_scorer(self.name, explained, judge.name, work)

    async def _continuations(self, feature: int, prompts: list[str]) -> tuple[list[str], int]:
        """The greedy continuations of `prompts` with `feature` clamped, and how many
        prompts this call steered (0 when remembered)."""
        key = (feature, tuple(prompts))
        found = self._seen.get(key)
        if found is not None:
            return found, 0
        results = await self.runner.steer(
            prompts, clamp_of(self.max_act_of, feature), continuation_tokens=CONTINUATION_TOKENS,
            top_tokens=0,
        )  # fmt: skip
        found = self._seen[key] = [r.steered_continuation for r in results]
        while len(self._seen) > 8 * _REMEMBERED:  # short strings: keep a whole bench's
            self._seen.popitem(last=False)
        return found, len(prompts)
