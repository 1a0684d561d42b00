"""Which lines of the retrieval pool a predicate fires on, for every line at once: the
pool is read into a `TokenTable` once, so designing experiments does not run each
hypothesis over thousands of lines in Python, round after round."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np

from agent.rules.synthesis import Labeled
from agent.rules.table import TokenTable
from predicates.language import Predicate, TokenView

KEPT = 512  # predicates whose verdicts are remembered (oldest dropped first)


class PoolIndex:
    def __init__(self, pool: Sequence[TokenView]) -> None:
        self.pool = pool
        self._lines: dict[Predicate, np.ndarray] = {}
        # Token-level verdicts of the parts the table cannot judge alone (quotes, what
        # precedes a word, code): the same classes come back feature after feature.
        self._parts: dict[object, np.ndarray] = {}

    @cached_property
    def _table(self) -> TokenTable:
        return TokenTable.of([Labeled(v, (False,) * len(v.tokens)) for v in self.pool])

    def firing(self, predicate: Predicate) -> np.ndarray:
        """Per pool line, whether the predicate fires anywhere on it."""
        found = self._lines.get(predicate)
        if found is None:
            verdicts = self._table.verdicts(predicate, self._part)
            assert verdicts is not None  # every part has an answer from _part
            found = np.bincount(self._table.item[verdicts], minlength=len(self.pool)) > 0
            _remember(self._lines, predicate, found)
        return found

    def _part(self, part: object) -> np.ndarray:
        """Per token of the pool, a part's verdict, evaluated line by line once."""
        found = self._parts.get(part)
        if found is None:
            evaluate = part.evaluate  # type: ignore[attr-defined]
            found = np.fromiter(
                (v for view in self.pool for v in evaluate(view)), bool, len(self._table.labels)
            )
            _remember(self._parts, part, found)
        return found


def _remember(memory: dict[Any, np.ndarray], key: object, value: np.ndarray) -> None:
    memory[key] = value
    while len(memory) > KEPT:
        memory.pop(next(iter(memory)))
