"""Matryoshka SAE: a BatchTopK SAE whose first w features must reconstruct on their own.

Bussmann et al. 2025 ("Learning Multi-Level Features with Matryoshka Sparse
Autoencoders"); Nabeshima 2024 ("Matryoshka Sparse Autoencoders"). Encoding is
BatchTopK's (batch top-k in training, the global threshold at inference); the nesting
lives in the loss: the sum over widths w of the loss of the reconstruction from the
features [0, w). As in Bussmann et al., every prefix reads the same codes (SAELens
instead re-runs BatchTopK on each prefix's pre-activations).
"""

from __future__ import annotations

from itertools import pairwise

import torch

from sae.architectures.batchtopk import BatchTopKSAE
from sae.base import SAEConfig, SAEError, SparseCodes


class MatryoshkaSAE(BatchTopKSAE):
    architecture = "matryoshka"

    @classmethod
    def validate_config(cls, cfg: SAEConfig) -> None:
        super().validate_config(cfg)
        widths = cfg.matryoshka_widths
        if not widths:
            raise SAEError(
                "a 'matryoshka' SAE needs matryoshka_widths (nested prefix sizes ending at "
                f"d_sae={cfg.d_sae}), e.g. [{cfg.d_sae // 4}, {cfg.d_sae}]"
            )
        if widths[0] <= 0 or any(a >= b for a, b in pairwise(widths)):
            raise SAEError(f"matryoshka_widths must be positive and strictly increasing: {widths}")
        if widths[-1] != cfg.d_sae:
            raise SAEError(
                f"matryoshka_widths must end at d_sae={cfg.d_sae} (the full dictionary); "
                f"got {widths}"
            )

    @property
    def widths(self) -> list[int]:
        assert self.cfg.matryoshka_widths is not None  # checked in validate_config
        return self.cfg.matryoshka_widths

    def prefix_reconstructions(self, codes: torch.Tensor | SparseCodes) -> list[torch.Tensor]:
        """For each width w, the reconstruction [..., d_in] from features [0, w) alone.

        The last one is `decode(codes)`. A trainer sums the reconstruction losses of all.
        """
        if isinstance(codes, SparseCodes):
            values, indices = codes
            return [self.decode(SparseCodes(values * (indices < w), indices)) for w in self.widths]
        return self._dense_prefix_reconstructions(codes)

    def _dense_prefix_reconstructions(self, codes_NF: torch.Tensor) -> list[torch.Tensor]:
        if codes_NF.shape[-1] != self.d_sae:
            raise SAEError(f"codes have width {codes_NF.shape[-1]}, the SAE has d_sae={self.d_sae}")
        codes_NF = codes_NF.to(self.dtype)
        if self.cfg.rescale_acts_by_decoder_norm:
            codes_NF = codes_NF / self.W_dec.norm(dim=-1)
        # Each level adds its group of features to the previous level's reconstruction.
        out: list[torch.Tensor] = []
        recon: torch.Tensor = self.b_dec
        start = 0
        for width in self.widths:
            recon = recon + codes_NF[..., start:width] @ self.W_dec[start:width]
            out.append(recon)
            start = width
        return out
