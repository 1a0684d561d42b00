"""A random pool of contexts per split with every feature that fires in each: the source
of non-activating examples (a pool context where a feature never fires is a true
negative for it), at a memory cost bounded by the pool, not the corpus."""

from __future__ import annotations

from typing import Self

import torch
from torch import Tensor

from probes.evidence.accumulators import CONTEXT_BITS, StreamingSample, pair_key


class ContextPool:
    """Per split s (0 explain, 1 score), a seeded uniform sample of up to `size` contexts
    (chosen whatever fires in them, independent of batching) and the (context, feature)
    pairs that fire in the pool's contexts."""

    def __init__(
        self, size: int, seed: int, n_splits: int = 2, device: torch.device | str = "cpu"
    ) -> None:
        self.sample = StreamingSample(n_splits, size, seed, device)
        self.context_E = torch.zeros(0, dtype=torch.int64, device=device)
        self.feature_E = torch.zeros(0, dtype=torch.int64, device=device)

    @property
    def device(self) -> torch.device:
        return self.sample.device

    def update(
        self, contexts_C: Tensor, split_C: Tensor, context_N: Tensor, feature_N: Tensor
    ) -> None:
        """Offer a batch's contexts (each with its split) and its firing entries. Each
        context must lie wholly inside one batch."""
        if contexts_C.numel() == 0:
            return
        before = torch.sort(self._all_members()).values
        ones_C = torch.ones_like(contexts_C, dtype=torch.float32)
        self.sample.update(contexts_C, split_C.to(torch.int64), ones_C)
        after = self._all_members()
        joined = after[~torch.isin(after, before)]
        if joined.numel() == 0:
            return  # contexts only leave when others join
        evicted = before[~torch.isin(before, after)]
        if evicted.numel():
            keep_E = ~torch.isin(self.context_E, evicted)
            self.context_E, self.feature_E = self.context_E[keep_E], self.feature_E[keep_E]
        # The batch's contexts are a small id range: mark the joined ones in a table.
        base = int(contexts_C.min())
        joined_R = torch.zeros(
            int(contexts_C.max()) - base + 1, dtype=torch.bool, device=self.device
        )
        joined_R[joined - base] = True
        in_range_N = (context_N >= base) & (context_N < base + joined_R.numel())
        take_N = in_range_N.clone()
        take_N[in_range_N] = joined_R[context_N[in_range_N] - base]
        key_J = torch.unique(pair_key(feature_N[take_N].long(), context_N[take_N].long()))
        self.context_E = torch.cat([self.context_E, key_J & ((1 << CONTEXT_BITS) - 1)])
        self.feature_E = torch.cat([self.feature_E, key_J >> CONTEXT_BITS])

    def _all_members(self) -> Tensor:
        contexts_SK = self.sample.contexts_FK
        return contexts_SK[contexts_SK >= 0]

    def entries(self) -> tuple[Tensor, Tensor]:
        """(feature_E, context_E) of every firing pair in the pool, sorted by feature
        then context."""
        key_E = torch.unique(pair_key(self.feature_E, self.context_E))
        return key_E >> CONTEXT_BITS, key_E & ((1 << CONTEXT_BITS) - 1)

    def members(self, split: int) -> Tensor:
        """The pool's context ids of `split`, in sample (random) order."""
        contexts_SK = self.sample.ordered()[1]
        return contexts_SK[split][contexts_SK[split] >= 0]

    def state_dict(self) -> dict[str, Tensor]:
        return {
            **{f"sample.{k}": v for k, v in self.sample.state_dict().items()},
            "context_E": self.context_E.clone(),
            "feature_E": self.feature_E.clone(),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        prefix = "sample."
        self.sample.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )
        self.context_E = state["context_E"].to(self.device, torch.int64).clone()
        self.feature_E = state["feature_E"].to(self.device, torch.int64).clone()

    def to(self, device: torch.device | str) -> Self:
        self.sample.to(device)
        self.context_E, self.feature_E = self.context_E.to(device), self.feature_E.to(device)
        return self
