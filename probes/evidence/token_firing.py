"""How often each feature fires on each token id over the whole explain split, and how
often each token id occurs there: a word list can then be estimated from every firing of
the split (P(fires | token) = fires / occurrences), not only from the sampled contexts.

Pair counts are kept exactly as sorted (feature, token) keys with counts, merged from a
buffer of new keys whenever it holds `merge_every` entries; `finish` keeps each feature's
`n` most-fired tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from probes.evidence.accumulators import check_config

_STRIDE = 1 << 32  # key = feature * _STRIDE + token id


class TokenFiring:
    def __init__(
        self, n_features: int, device: torch.device | str = "cpu", merge_every: int = 2_000_000
    ) -> None:
        if n_features <= 0:
            raise ValueError(f"n_features must be > 0, got {n_features}")
        self.n_features, self.merge_every = n_features, merge_every
        self.keys = torch.zeros(0, dtype=torch.int64, device=device)
        self.counts = torch.zeros(0, dtype=torch.int64, device=device)
        self.token_count = torch.zeros(0, dtype=torch.int64, device=device)
        self._pending: list[Tensor] = []
        self._pending_n = 0

    @property
    def device(self) -> torch.device:
        return self.keys.device

    def update(self, feature_N: Tensor, token_N: Tensor, tokens_T: Tensor) -> None:
        """Firings (feature, token id) of one batch, and the token ids it read."""
        if feature_N.numel():
            self._pending.append(feature_N.to(torch.int64) * _STRIDE + token_N.to(torch.int64))
            self._pending_n += feature_N.numel()
        if tokens_T.numel():
            seen = torch.bincount(tokens_T.to(torch.int64), minlength=self.token_count.numel())
            if seen.numel() > self.token_count.numel():
                grown = torch.zeros_like(seen)
                grown[: self.token_count.numel()] = self.token_count
                self.token_count = grown
            self.token_count += seen
        if self._pending_n >= self.merge_every:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        new = torch.cat(self._pending)
        keys, inverse = torch.unique(torch.cat([self.keys, new]), return_inverse=True)
        weights = torch.cat([self.counts, torch.ones_like(new)])
        self.keys = keys
        self.counts = torch.zeros_like(keys).scatter_add_(0, inverse, weights)
        self._pending, self._pending_n = [], 0

    def finish(self, n: int) -> dict[str, Tensor]:
        """Each feature's `n` most-fired tokens (`ids` -1 and `fires` 0 where it has fewer),
        and every token id's occurrences: `ids` [F, n], `fires` [F, n], `count` [V]."""
        self._merge()
        feature = torch.div(self.keys, _STRIDE, rounding_mode="floor")
        token = self.keys % _STRIDE
        # by feature, then by count descending (ties: smaller token id first)
        order = torch.argsort(feature * (1 << 31) - self.counts, stable=True)
        feature, token, counts = feature[order], token[order], self.counts[order]
        per_feature = torch.bincount(feature, minlength=self.n_features)
        first = torch.cumsum(per_feature, 0) - per_feature
        rank = torch.arange(feature.numel(), device=self.device) - first[feature]
        keep = rank < n
        ids = torch.full((self.n_features, n), -1, dtype=torch.int64, device=self.device)
        fires = torch.zeros((self.n_features, n), dtype=torch.int64, device=self.device)
        ids[feature[keep], rank[keep]] = token[keep]
        fires[feature[keep], rank[keep]] = counts[keep]
        return {"ids": ids.cpu(), "fires": fires.cpu(), "count": self.token_count.cpu()}

    def state_dict(self) -> dict[str, Tensor]:
        self._merge()
        return {
            "n_features": torch.tensor(self.n_features, dtype=torch.int64),
            "keys": self.keys.clone(),
            "counts": self.counts.clone(),
            "token_count": self.token_count.clone(),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        check_config("TokenFiring", {"n_features": self.n_features}, state)
        self.keys = state["keys"].to(self.device).clone()
        self.counts = state["counts"].to(self.device).clone()
        self.token_count = state["token_count"].to(self.device).clone()
        self._pending, self._pending_n = [], 0
