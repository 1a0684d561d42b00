"""AbsTopK SAE: each row keeps its k pre-activations of largest magnitude, signs kept.

"AbsTopK: Rethinking Sparse Autoencoders For Bidirectional Features" (arXiv 2510.00404),
as SAELens' AbsTopKSAE (architecture "abstopk"): no ReLU, so a feature may fire
negatively (a feature and its opposite share one decoder row). Evidence that ranks by
value reads the positive side; the negative side shows in the sign of the values.
"""

from __future__ import annotations

import torch

from sae.architectures.topk import TopKSAE


class AbsTopKSAE(TopKSAE):
    architecture = "abstopk"

    def _select(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        indices = pre.abs().topk(self.k, dim=-1).indices
        return pre.gather(-1, indices), indices
