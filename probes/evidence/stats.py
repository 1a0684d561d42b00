"""Per-feature firing statistics over a stream of sparse activations: counts, density,
sum, mean, max and a log-spaced histogram, on the state's device."""

from __future__ import annotations

from typing import Self

import torch
from torch import Tensor

from probes.evidence.accumulators import check_config, check_coo, check_device


class FeatureStats:
    """Firing counts, sum/max of activations and a log-spaced histogram per feature.

    Bin i covers [edges[i], edges[i+1]) of `bin_edges` (n_bins+1 log-spaced values from lo
    to hi); values below edges[1] fall in bin 0, values at or above edges[n_bins-1] in the
    last bin. The caller passes the number of tokens of each batch (firing or not).
    """

    def __init__(
        self,
        n_features: int,
        n_bins: int,
        lo: float,
        hi: float,
        device: torch.device | str = "cpu",
    ) -> None:
        if n_features <= 0 or n_bins <= 0 or not 0 < lo < hi:
            raise ValueError(f"need n_features, n_bins > 0 and 0 < lo < hi, got {lo=}, {hi=}")
        self.n_features, self.n_bins, self.lo, self.hi = n_features, n_bins, lo, hi
        self.count_F = torch.zeros(n_features, dtype=torch.int64, device=device)
        self.sum_F = torch.zeros(n_features, dtype=torch.float64, device=device)
        self.max_F = torch.zeros(n_features, dtype=torch.float32, device=device)
        self.hist_FB = torch.zeros(n_features, n_bins, dtype=torch.int64, device=device)
        self.tokens_seen = torch.zeros((), dtype=torch.int64, device=device)
        self._inner_edges = self.bin_edges[1:-1].contiguous()

    @property
    def device(self) -> torch.device:
        return self.count_F.device

    @property
    def bin_edges(self) -> Tensor:
        return torch.logspace(
            torch.log10(torch.tensor(self.lo, dtype=torch.float64)).item(),
            torch.log10(torch.tensor(self.hi, dtype=torch.float64)).item(),
            self.n_bins + 1,
            dtype=torch.float64,
            device=self.device,
        )

    def update(self, feature_N: Tensor, value_N: Tensor, n_tokens: int) -> None:
        """Fold one batch of `n_tokens` tokens, with its COO activations, into the state."""
        check_coo(feature_N, feature_N, value_N, self.n_features)
        check_device(feature_N, self.device, "feature_N")
        check_device(value_N, self.device, "value_N")
        self.tokens_seen += n_tokens
        fires_N = value_N > 0
        feature_N = feature_N[fires_N].to(torch.int64)
        value_N = value_N[fires_N].to(torch.float32)
        self.count_F.scatter_add_(0, feature_N, torch.ones_like(feature_N))
        self.sum_F.scatter_add_(0, feature_N, value_N.to(torch.float64))
        self.max_F.scatter_reduce_(0, feature_N, value_N, reduce="amax")
        bin_N = torch.searchsorted(self._inner_edges, value_N.to(torch.float64), right=True)
        flat_N = feature_N * self.n_bins + bin_N
        self.hist_FB.view(-1).scatter_add_(0, flat_N, torch.ones_like(flat_N))

    @property
    def density_F(self) -> Tensor:
        """Fraction of tokens seen on which each feature fired."""
        return self.count_F.to(torch.float64) / self.tokens_seen.clamp(min=1)

    @property
    def mean_F(self) -> Tensor:
        """Mean activation over the tokens where the feature fired (NaN if it never did)."""
        return self.sum_F / self.count_F.to(torch.float64)

    def _config(self) -> dict[str, int]:
        return {"n_features": self.n_features, "n_bins": self.n_bins}

    def state_dict(self) -> dict[str, Tensor]:
        config = {name: torch.tensor(v, dtype=torch.int64) for name, v in self._config().items()}
        bounds = torch.tensor([self.lo, self.hi], dtype=torch.float64)
        buffers = {
            "count_F": self.count_F,
            "sum_F": self.sum_F,
            "max_F": self.max_F,
            "hist_FB": self.hist_FB,
            "tokens_seen": self.tokens_seen,
        }
        return {**config, "bounds": bounds, **{n: t.clone() for n, t in buffers.items()}}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        check_config("FeatureStats", self._config(), state)
        if state["bounds"].tolist() != [self.lo, self.hi]:
            raise ValueError(f"FeatureStats state has bounds {state['bounds'].tolist()}")
        self.count_F = state["count_F"].to(self.device).clone()
        self.sum_F = state["sum_F"].to(self.device).clone()
        self.max_F = state["max_F"].to(self.device).clone()
        self.hist_FB = state["hist_FB"].to(self.device).clone()
        self.tokens_seen = state["tokens_seen"].to(self.device).clone()

    def to(self, device: torch.device | str) -> Self:
        self.count_F, self.sum_F = self.count_F.to(device), self.sum_F.to(device)
        self.max_F, self.hist_FB = self.max_F.to(device), self.hist_FB.to(device)
        self.tokens_seen = self.tokens_seen.to(device)
        self._inner_edges = self._inner_edges.to(device)
        return self
