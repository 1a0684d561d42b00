"""Which lines of the retrieval pool a predicate fires on, for every line at once: the
pool is read into a `TokenTable` once, so designing experiments does not run each
hypothesis over thousands of lines in Python, round after round."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

from agent.rules.synthesis import Labeled
from agent.rules.table import TokenTable
from predicates.language import Predicate, TokenView

KEPT = 512  # predicates whose firing lines are remembered (oldest dropped first)


class PoolIndex:
    def __init__(self, pool: Sequence[TokenView]) -> None:
        self.pool = pool
        self._lines: dict[Predicate, np.ndarray] = {}

    @cached_property
    def _table(self) -> TokenTable:
        return TokenTable.of([Labeled(v, (False,) * len(v.tokens)) for v in self.pool])

    def firing(self, predicate: Predicate) -> np.ndarray:
        """Per pool line, whether the predicate fires anywhere on it."""
        found = self._lines.get(predicate)
        if found is None:
            verdicts = self._table.verdicts(predicate)
            if verdicts is None:
                found = np.asarray([any(predicate.evaluate(v)) for v in self.pool], dtype=bool)
            else:
                found = np.bincount(self._table.item[verdicts], minlength=len(self.pool)) > 0
            self._lines[predicate] = found
            while len(self._lines) > KEPT:
                self._lines.pop(next(iter(self._lines)))
        return found
