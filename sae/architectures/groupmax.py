"""GroupMax SAE (EleutherAI sparsify's `activation: "groupmax"`): the features form k
contiguous groups of d_sae / k, and each row keeps the largest ReLU'd pre-activation of
every group (sparsify/fused_encoder.py: `preacts.unflatten(-1, (k, -1)).max(dim=-1)`),
so exactly one feature per group is chosen (its value may be 0).
"""

from __future__ import annotations

import torch

from sae.architectures.topk import TopKSAE
from sae.base import SAEConfig, SAEError


class GroupMaxSAE(TopKSAE):
    """k is the number of groups; it must divide d_sae."""

    architecture = "groupmax"

    @classmethod
    def validate_config(cls, cfg: SAEConfig) -> None:
        super().validate_config(cfg)
        assert cfg.k is not None  # checked by TopKSAE
        if cfg.d_sae % cfg.k:
            raise SAEError(
                f"a 'groupmax' SAE splits its d_sae={cfg.d_sae} features into k={cfg.k} "
                "equal groups; k must divide d_sae"
            )

    def _select(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, within = pre.relu().unflatten(-1, (self.k, -1)).max(dim=-1)
        offsets = torch.arange(0, self.d_sae, self.d_sae // self.k, device=pre.device)
        return values, within + offsets
