"""TopK SAE: f = ReLU of each row's k largest pre-activations, 0 elsewhere.

Makhzani & Frey 2013 ("k-Sparse Autoencoders"); Gao et al. 2024 ("Scaling and
evaluating sparse autoencoders"). As in SAELens, top-k is taken on the raw
pre-activations and ReLU is applied to the kept values.
"""

from __future__ import annotations

import torch

from sae.architectures.standard import encode_sparse_by_rows
from sae.base import SAEConfig, SAEError, SparseAutoencoder, SparseCodes


def check_k(cfg: SAEConfig) -> int:
    """cfg.k, after checking that 1 <= k <= d_sae."""
    if cfg.k is None:
        raise SAEError(
            f"a {cfg.architecture!r} SAE needs k (active features per token) in its config; "
            "set cfg.k, e.g. k=32"
        )
    if not 1 <= cfg.k <= cfg.d_sae:
        raise SAEError(f"k={cfg.k} must be between 1 and d_sae={cfg.d_sae}")
    return cfg.k


class TopKSAE(SparseAutoencoder):
    architecture = "topk"

    @classmethod
    def validate_config(cls, cfg: SAEConfig) -> None:
        super().validate_config(cfg)
        check_k(cfg)

    @property
    def k(self) -> int:
        return check_k(self.cfg)

    def _select(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, indices = pre.topk(self.k, dim=-1)
        return values.relu(), indices

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        values, indices = self._select(pre)
        return torch.zeros_like(pre).scatter(-1, indices, values)

    def encode_sparse(self, x: torch.Tensor) -> SparseCodes:
        """(values, indices) [..., k] straight from the top-k: no dense codes."""
        return encode_sparse_by_rows(self, x, self._select)
