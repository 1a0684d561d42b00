"""Standard SAE: f = ReLU(pre) (Bricken et al. 2023, "Towards Monosemanticity").

Also home of the row-chunked sparse encoding shared by the ReLU-family dictionaries
(standard, TopK, BatchTopK, JumpReLU): each chunk of rows goes through the encoder and is
reduced to (values, indices) at once, so no dense [tokens, d_sae] code tensor is built.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from sae.base import SparseAutoencoder, SparseCodes

# Pre-activation elements encoded at once by the sparse path: this bounds the memory of
# one chunk whatever the number of tokens. CPUs do as well with small chunks (64 MiB in
# float32); GPUs need large ones to stay busy (on an H100 at d_sae=65536, 2^28 elements
# gave 1.2x (float32) and 1.4x (bfloat16) the tokens/s of 2^24).
CHUNK_ELEMENTS_CPU = 1 << 24
CHUNK_ELEMENTS_GPU = 1 << 28

Selector = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def encode_sparse_by_rows(
    sae: SparseAutoencoder,
    x: torch.Tensor,
    select: Selector,
    encode_chunk: Selector | None = None,
) -> SparseCodes:
    """Encode x [..., d_in] chunk by chunk; `select` turns pre-activations [n, d_sae]
    into (values, indices) [n, K_chunk] (or `encode_chunk` turns a chunk of x rows into
    them); chunks are padded with zeros to a common K."""
    lead = x.shape[:-1]
    rows_ND = x.reshape(-1, x.shape[-1])
    budget = CHUNK_ELEMENTS_CPU if sae.device.type == "cpu" else CHUNK_ELEMENTS_GPU
    chunks = rows_ND.split(max(1, budget // sae.d_sae)) if rows_ND.shape[0] else (rows_ND,)
    parts = [encode_chunk(c) if encode_chunk else select(sae.pre_acts(c)) for c in chunks]
    k = max(values.shape[-1] for values, _ in parts)
    if len(parts) == 1:
        values_NK, indices_NK = parts[0]
    else:
        values_NK = torch.cat([F.pad(v, (0, k - v.shape[-1])) for v, _ in parts])
        indices_NK = torch.cat([F.pad(i, (0, k - i.shape[-1])) for _, i in parts])
    return SparseCodes(values_NK.reshape(*lead, k), indices_NK.reshape(*lead, k))


def select_above(
    pre_NF: torch.Tensor, threshold: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the pre-activations above `threshold` and above 0.

    `threshold` is a scalar or [d_sae]. K is the largest number of active features in
    any row (at least 1); shorter rows are padded with value 0.
    """
    threshold = threshold.clamp_min(0).to(pre_NF.dtype)
    keep_NF = pre_NF > threshold
    k = max(int(keep_NF.sum(dim=-1).max()), 1) if pre_NF.shape[0] else 1
    if threshold.dim() == 0:
        # One threshold: the `k` largest pre-activations of a row are exactly its active
        # ones (plus padding below the threshold, zeroed next).
        values, indices = pre_NF.topk(k, dim=-1)
        return torch.where(values > threshold, values, 0), indices
    # Per-feature thresholds change the ranking: rank the masked pre-activations.
    return torch.where(keep_NF, pre_NF, 0).topk(k, dim=-1)


class StandardSAE(SparseAutoencoder):
    """ReLU dictionary, trained with an L1 penalty on f (not this class's concern)."""

    architecture = "standard"

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return pre.relu()

    def encode_sparse(self, x: torch.Tensor) -> SparseCodes:
        zero = torch.zeros((), device=self.device, dtype=self.dtype)
        return encode_sparse_by_rows(self, x, lambda pre: select_above(pre, zero))
