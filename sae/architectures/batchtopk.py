"""BatchTopK SAE (Bussmann, Leask & Nanda 2024, "BatchTopK Sparse Autoencoders").

Training mode: keep the k * n largest ReLU'd pre-activations of the whole batch of n
rows (k active features per row on average). Eval mode: a JumpReLU with one global
threshold θ, f = pre * (pre > θ), so that a row's code no longer depends on its batch.
θ is a registered buffer, a scalar (ours, dictionary_learning's) or [d_sae] (SAELens
saves BatchTopK SAEs as JumpReLU ones with θ repeated per feature); both are accepted.
"""

from __future__ import annotations

from typing import Any

import torch

from sae.architectures.standard import encode_sparse_by_rows, select_above
from sae.architectures.topk import check_k
from sae.base import SAEConfig, SAEError, SparseAutoencoder, SparseCodes


class BatchTopKSAE(SparseAutoencoder):
    """Starts in eval mode (inference is the common use); trainers call `.train()`."""

    architecture = "batchtopk"
    extra_tensors = ("threshold",)

    threshold: torch.Tensor

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros(()))
        self.threshold_batches = 0  # batches averaged into `threshold` so far
        self.train(False)

    @classmethod
    def validate_config(cls, cfg: SAEConfig) -> None:
        super().validate_config(cfg)
        check_k(cfg)

    @property
    def k(self) -> int:
        return check_k(self.cfg)

    # -- activation ----------------------------------------------------------------------

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        if self.training:
            flat = pre.flatten()
            values, indices = flat.topk(self._batch_budget(pre), sorted=False)
            return torch.zeros_like(flat).scatter(0, indices, values.relu()).view_as(pre)
        return torch.where(pre > self.threshold.clamp_min(0), pre, 0)

    def encode_sparse(self, x: torch.Tensor) -> SparseCodes:
        if not self.training:
            return encode_sparse_by_rows(self, x, lambda pre: select_above(pre, self.threshold))
        pre = self.pre_acts(x)
        values_NK, indices_NK = self._batch_topk_sparse(pre.reshape(-1, self.d_sae))
        k = values_NK.shape[-1]
        return SparseCodes(values_NK.view(*x.shape[:-1], k), indices_NK.view(*x.shape[:-1], k))

    def _batch_budget(self, pre: torch.Tensor) -> int:
        return self.k * (pre.numel() // self.d_sae)  # k per row on average

    def _batch_topk_sparse(self, pre_NF: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch top-k as per-row (values, indices) padded to the busiest row."""
        n = pre_NF.shape[0]
        values, flat_idx = pre_NF.flatten().topk(self._batch_budget(pre_NF), sorted=False)
        # Sorting flat indices groups the kept entries by row; an entry's slot is its
        # rank inside its row.
        flat_idx, order = flat_idx.sort()
        rows = flat_idx // self.d_sae
        counts = torch.bincount(rows, minlength=n)
        k = max(int(counts.max()), 1) if n else 1
        slots = torch.arange(rows.numel(), device=rows.device) - (counts.cumsum(0) - counts)[rows]
        values_NK = pre_NF.new_zeros(n, k).index_put((rows, slots), values[order].relu())
        indices_NK = rows.new_zeros(n, k).index_put((rows, slots), flat_idx % self.d_sae)
        return values_NK, indices_NK

    # -- inference threshold -------------------------------------------------------------

    @torch.no_grad()
    def update_threshold_(self, codes: torch.Tensor | SparseCodes, lr: float | None = None) -> None:
        """Fold one training batch's codes (training-mode output) into θ.

        Bussmann et al. 2024, sec. 3: θ is the average over batches of the smallest
        positive activation kept by BatchTopK. With `lr=None` this is the exact running
        mean over the batches seen; with `lr` an exponential moving average (SAELens uses
        lr=0.01).
        """
        values = codes.values if isinstance(codes, SparseCodes) else codes
        positive = values > 0
        if not bool(positive.any()):
            return
        batch_min = torch.where(positive, values, torch.inf).min().float()
        self.threshold_batches += 1
        weight = 1.0 / self.threshold_batches if lr is None else lr
        new = self.threshold.float().lerp(batch_min.expand_as(self.threshold), weight)
        self.threshold.copy_(new)

    @torch.no_grad()
    def set_threshold_(self, threshold: torch.Tensor) -> None:
        """Replace θ by a scalar or a [d_sae] tensor (as read from a file)."""
        if threshold.numel() == 1:
            threshold = threshold.reshape(())
        elif threshold.shape != (self.d_sae,):
            raise SAEError(
                f"threshold must be a scalar or have shape [{self.d_sae}]; "
                f"got {list(threshold.shape)}"
            )
        self.threshold = threshold.detach().to(self.device, self.dtype).clone()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # load_state_dict insists on equal shapes: adopt the file's θ shape first.
        threshold = state_dict.get(prefix + "threshold")
        if isinstance(threshold, torch.Tensor) and threshold.shape != self.threshold.shape:
            self.set_threshold_(threshold)
        super()._load_from_state_dict(state_dict, prefix, *args)
