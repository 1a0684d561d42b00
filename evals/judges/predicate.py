"""The predicate judge: runs an explanation's executable predicate instead of asking an
LLM. It reads only explanations that carry one (the rules agent, the top-tokens
baseline); for prose its methods raise `JudgeUnavailable`.

Every prediction is the predicate's verdict per token, read as the LLM scorer's
answers would be:
- detect: 1.0 when it fires on any token of the example, else 0.0;
- fuzz: the F1 (Dice) overlap of the highlighted tokens with the tokens it fires on,
  so a highlighting that matches exactly gets 1.0, a disjoint one 0.0, and the
  scorer's 0.5 threshold accepts a highlighting that mostly agrees;
- simulate: 10 (the top of Bills et al.'s 0-10 scale) where it fires, else 0 (a
  tiered predicate: 10 where it fires strongly, 4 where only weakly);
- generate: lines of the explain split's retrieval pool on which it fires (strongly,
  for a tiered one), drawn with a fixed seed (texts nothing was scored on); where the
  pool's sample of contexts holds too few (a rare word), the rest of the explain split
  is read on, in a fixed order, as a writer would look further;
- intruder: the item whose highlighting agrees least with where it fires (the fuzz F1)
  is the intruder, the probability split among the items tied lowest (so a predicate
  that fires nowhere guesses at chance). Without an explanation there is nothing to
  run: it raises `JudgeUnavailable`;
- pick_steered: runs the output predicate (what the feature promotes) over each
  option's steered continuations; the option where it names the most pieces is picked.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from agent.rules.pool import remaining_lines, retrieval_pool
from agent.rules.synthesis import agreement
from evals.core import Explained, Highlighted, JudgeUnavailable
from predicates.language import Predicate, Tiered, TokenView, from_dict, levels
from predicates.output import named_in
from probes.evidence.store import EvidenceStore, Example

TOP = 10.0  # Bills et al. (2023): simulated activations on a 0-10 scale


def split_among(chosen: list[bool]) -> list[float]:
    """Probability 1 split evenly among the chosen items (ties split: no free win)."""
    return [1 / sum(chosen) if c else 0.0 for c in chosen]


class PredicateJudge:
    """Judges explanations by running their predicate. `pool` is where `generate` draws
    its texts from (see `for_store`); without one, `generate` refuses."""

    name = "predicate"

    def __init__(
        self, pool: Sequence[TokenView] = (), seed: int = 0, more: Iterable[TokenView] = ()
    ) -> None:
        self.pool = list(pool)
        self.seed = seed
        self._more = iter(more)  # lines beyond the pool, read once when a search needs them
        self._read: list[TokenView] = []

    @classmethod
    def for_store(cls, store: EvidenceStore, seed: int = 0) -> PredicateJudge:
        """A judge whose `generate` draws from the explain split of `store`."""
        return cls(retrieval_pool(store, seed=seed), seed, remaining_lines(store, seed=seed))

    def can_judge(self, explained: Explained | None) -> bool:
        return explained is not None and explained.predicate is not None

    def predicate(self, explained: Explained) -> Predicate:
        """The explanation's predicate (a malformed one raises pydantic's error)."""
        if explained.predicate is None:
            raise JudgeUnavailable(
                "the explanation carries no predicate to run (prose needs an LLM judge)"
            )
        return from_dict(explained.predicate)

    def verdicts(self, explained: Explained, examples: Sequence[Example]) -> list[list[bool]]:
        """Per example, per token of `example.tokens`, whether the predicate fires. It
        reads the left context too (where a quote or a line began), as the explainer did."""
        predicate = self.predicate(explained)
        return [
            predicate.evaluate(TokenView.of(e.before + e.tokens))[len(e.before) :] for e in examples
        ]

    async def detect(self, explained: Explained, examples: Sequence[Example]) -> list[float]:
        return [float(any(row)) for row in self.verdicts(explained, examples)]

    async def fuzz(self, explained: Explained, items: Sequence[Highlighted]) -> list[float]:
        rows = self.verdicts(explained, [item.example for item in items])
        return [
            agreement(np.array(row), np.array(item.marked, dtype=bool)).f1
            for row, item in zip(rows, items, strict=True)
        ]

    async def intruder(
        self, explained: Explained | None, rounds: Sequence[Sequence[Highlighted]]
    ) -> list[list[float]]:
        if explained is None:
            raise JudgeUnavailable(
                "the intruder test without an explanation compares texts with each other: "
                "a predicate judge has nothing to run (it needs an LLM judge)"
            )
        out: list[list[float]] = []
        for items in rounds:
            fits = await self.fuzz(explained, items)
            out.append(split_among([f == min(fits) for f in fits]))
        return out

    async def pick_steered(
        self, explained: Explained, prompts: Sequence[str], options: Sequence[Sequence[str]]
    ) -> list[float]:
        """The option whose continuations hold the most pieces the output claim names;
        ties split the probability (a claim that names nothing guesses at chance)."""
        if explained.output_predicate is None:
            raise JudgeUnavailable("the explanation carries no output predicate to run")
        claim = from_dict(explained.output_predicate)
        counts = [sum(named_in(claim, text) for text in option) for option in options]
        return split_among([c == max(counts) for c in counts])

    async def simulate(
        self, explained: Explained, examples: Sequence[Example]
    ) -> list[list[float]]:
        predicate = self.predicate(explained)
        return [
            [TOP * level for level in levels(predicate, TokenView.of(e.before + e.tokens))][
                len(e.before) :
            ]
            for e in examples
        ]

    async def generate(self, explained: Explained, n: int) -> list[str]:
        """Up to `n` distinct pool lines the predicate fires on (fewer when the pool
        holds fewer), the same ones for the same seed and feature."""
        predicate = self.predicate(explained)
        if isinstance(predicate, Tiered):  # write what it says fires strongly
            predicate = predicate.strong
        if not self.pool:
            raise ValueError(
                "this predicate judge has no retrieval pool to generate from: "
                "build it with PredicateJudge.for_store(store)"
            )
        order = list(range(len(self.pool)))
        random.Random(f"{self.seed}:{explained.feature}").shuffle(order)
        found: list[str] = []
        # A shuffled scan that stops at n (cheap on a large pool), then the lines beyond
        # the pool in their fixed order (the same texts whatever was judged before).
        for view in itertools.chain((self.pool[i] for i in order), self._beyond()):
            if view.text not in found and any(predicate.evaluate(view)):
                found.append(view.text)
                if len(found) == n:
                    break
        return found

    def _beyond(self) -> Iterator[TokenView]:
        yield from list(self._read)
        for view in self._more:
            self._read.append(view)
            yield view
