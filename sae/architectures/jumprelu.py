"""JumpReLU SAE: f = pre * (pre > threshold), one threshold per feature.

Rajamanoharan et al. 2024 ("Jumping Ahead: Improving Reconstruction Fidelity with
JumpReLU Sparse Autoencoders"), eq. 4. As in SAELens' JumpReLUSAE, ReLU is applied too,
so a threshold below zero acts like zero (the paper's thresholds are exp(log θ) > 0, and
then both agree). Inference only: training the threshold needs a straight-through
estimator that lives with the trainer, if ever.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from sae.architectures.standard import encode_sparse_by_rows, select_above
from sae.base import SAEConfig, SparseAutoencoder, SparseCodes


class JumpReLUSAE(SparseAutoencoder):
    architecture = "jumprelu"
    extra_tensors: ClassVar[tuple[str, ...]] = ("threshold",)

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        # A parameter, as in SAELens, so that a trainer may learn it.
        self.threshold = nn.Parameter(torch.zeros(cfg.d_sae))

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.where(pre > self.threshold.clamp_min(0), pre, 0)

    def encode_sparse(self, x: torch.Tensor) -> SparseCodes:
        return encode_sparse_by_rows(self, x, lambda pre: select_above(pre, self.threshold))
