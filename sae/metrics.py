"""Reconstruction and sparsity quality of an SAE on activations (SAEBench "core" metrics).

Everything is streamed: `ReconstructionStats.update` takes one batch of activations
with its codes and reconstruction and adds to running sums, so no [tokens, d_sae] code
tensor and no full set of activations is ever held. Definitions, over the N eval tokens
(x [N, d_in], reconstruction x^, codes f [N, d_sae]):

- l0: mean number of non-zero features per token, mean_n |{i : f_ni != 0}|.
- explained_variance: 1 - sum_n ||x_n - x^_n||^2 / sum_n ||x_n - mean(x)||^2, pooled
  over all tokens, mean(x) being the mean activation vector over all N tokens. This is
  SAEBench's / SAELens' current `explained_variance` (one pooled ratio), not their
  `explained_variance_legacy` (the mean of per-token ratios).
- mse: mean squared error per element, sum_n ||x_n - x^_n||^2 / (N * d_in).
- cosine: mean over tokens of cos(x_n, x^_n) (a zero vector has cosine 0).
- fraction_alive: share of features that are non-zero on at least one eval token.
- firing_counts_F: per feature, the number of tokens on which it is non-zero.

The running sums are float64 on the SAE's device; the total variance is merged batch by
batch with Chan et al.'s pairwise update, so it stays exact for activations with a large
mean (residual streams) instead of cancelling in sum(x^2) - N mean^2.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sae.base import SparseAutoencoder, SparseCodes

DEFAULT_BATCH_TOKENS = 4096


@dataclass(frozen=True)
class QualityMetrics:
    """SAE quality over `n_tokens` tokens; see the module docstring for definitions."""

    n_tokens: int
    l0: float
    explained_variance: float
    mse: float
    cosine: float
    fraction_alive: float
    firing_counts_F: torch.Tensor  # int64 [d_sae], CPU

    @property
    def n_alive(self) -> int:
        return int((self.firing_counts_F > 0).sum())

    def summary(self) -> dict[str, float | int]:
        """The scalar metrics as a JSON-ready dict (firing counts left out)."""
        return {
            "n_tokens": self.n_tokens,
            "l0": self.l0,
            "explained_variance": self.explained_variance,
            "mse": self.mse,
            "cosine": self.cosine,
            "fraction_alive": self.fraction_alive,
            "n_alive": self.n_alive,
            "d_sae": int(self.firing_counts_F.numel()),
        }


class ReconstructionStats:
    """Running sums for `QualityMetrics`, fed one batch at a time."""

    def __init__(self, d_in: int, d_sae: int, device: torch.device | str = "cpu") -> None:
        self.d_in = d_in
        self.d_sae = d_sae
        self.device = torch.device(device)
        self.n_tokens = 0
        self._mean_D = torch.zeros(d_in, dtype=torch.float64, device=self.device)
        self._total_ss = torch.zeros((), dtype=torch.float64, device=self.device)
        self._resid_ss = torch.zeros((), dtype=torch.float64, device=self.device)
        self._cosine_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._active_sum = torch.zeros((), dtype=torch.int64, device=self.device)
        self._firing_F = torch.zeros(d_sae, dtype=torch.int64, device=self.device)

    def update(self, x_ND: torch.Tensor, recon_ND: torch.Tensor, codes: SparseCodes) -> None:
        """Add a batch: activations x [N, d_in], reconstruction [N, d_in], codes [N, K]."""
        if x_ND.shape != recon_ND.shape or x_ND.dim() != 2 or x_ND.shape[1] != self.d_in:
            raise ValueError(
                f"x and its reconstruction must both be [N, {self.d_in}], "
                f"got {tuple(x_ND.shape)} and {tuple(recon_ND.shape)}"
            )
        n = x_ND.shape[0]
        if n == 0:
            return
        x = x_ND.to(self.device, torch.float64)
        recon = recon_ND.to(self.device, torch.float64)
        self._resid_ss += (x - recon).pow(2).sum()
        self._cosine_sum += F.cosine_similarity(x, recon, dim=-1, eps=1e-12).sum()
        self._merge_variance(x)
        values, indices = codes
        active = values.reshape(n, -1) != 0
        self._active_sum += active.sum().to(self.device)
        fired = indices.reshape(n, -1)[active].to(self.device)
        self._firing_F += torch.bincount(fired, minlength=self.d_sae)
        self.n_tokens += n

    def _merge_variance(self, x: torch.Tensor) -> None:
        # Chan, Golub & LeVeque (1979): combine (count, mean, sum of squared deviations)
        # of the tokens so far with those of this batch.
        n_old, n_new = self.n_tokens, x.shape[0]
        mean_new = x.mean(dim=0)
        ss_new = (x - mean_new).pow(2).sum()
        delta = mean_new - self._mean_D
        total = n_old + n_new
        self._total_ss += ss_new + delta.pow(2).sum() * (n_old * n_new / total)
        self._mean_D += delta * (n_new / total)

    def result(self) -> QualityMetrics:
        if self.n_tokens == 0:
            raise ValueError("no tokens were evaluated; give at least one activation row")
        n = self.n_tokens
        total_ss = float(self._total_ss)
        resid_ss = float(self._resid_ss)
        firing = self._firing_F.cpu()
        return QualityMetrics(
            n_tokens=n,
            l0=float(self._active_sum) / n,
            explained_variance=1.0 - resid_ss / total_ss if total_ss > 0 else float("nan"),
            mse=resid_ss / (n * self.d_in),
            cosine=float(self._cosine_sum) / n,
            fraction_alive=float((firing > 0).sum()) / self.d_sae,
            firing_counts_F=firing,
        )


@torch.no_grad()
def reconstruct(sae: SparseAutoencoder, x_ND: torch.Tensor) -> tuple[SparseCodes, torch.Tensor]:
    """(sparse codes, reconstruction) of x, on the SAE's device; `sae.reconstruct`, so a
    run-time input normalisation is undone as the SAE defines it."""
    return sae.reconstruct(x_ND.to(sae.device))


@torch.no_grad()
def quality_metrics(
    sae: SparseAutoencoder,
    acts: torch.Tensor | Iterable[torch.Tensor],
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> QualityMetrics:
    """Quality of `sae` on activations: one tensor [N, d_in] (cut into batches of
    `batch_tokens` rows) or an iterable of such batches (e.g. streamed from a model)."""
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
    batches = acts.split(batch_tokens) if isinstance(acts, torch.Tensor) else acts
    stats = ReconstructionStats(sae.d_in, sae.d_sae, sae.device)
    for x_ND in batches:
        x_ND = x_ND.reshape(-1, x_ND.shape[-1])
        codes, recon = reconstruct(sae, x_ND)
        stats.update(x_ND, recon, codes)
    return stats.result()
