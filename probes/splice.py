"""The subject model with an SAE's reconstruction spliced in at a hookpoint: CE-loss recovered.

Three full forward passes per batch, each scored by next-token cross-entropy:
clean (untouched), spliced (the hookpoint's output replaced by the SAE reconstruction)
and zero-ablated (replaced by zeros). SAEBench's "CE loss score":

    ce_loss_recovered = (CE_zero - CE_spliced) / (CE_zero - CE_clean)

1.0: the reconstruction is as good as the real activations; 0.0: no better than zeros.

Only positions that yield activations are replaced: never the prefix (BOS or sink
token), padding, or a window's repeated left context. Cross-entropy is averaged over
valid next-token targets: position t predicting token t+1 where token t+1 is valid, so
every token of every text is scored once (its first token too when a prefix precedes it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import Progress
from torch import nn

from probes.hookpoints import attach, hookpoint_width, parse_hookpoint
from probes.model import SubjectModel
from probes.tokenization import Overflow, TokenBatch, tokenize_batch
from sae.base import SparseAutoencoder
from sae.metrics import ReconstructionStats

Replace = Callable[[torch.Tensor], torch.Tensor]  # x [N, D] at valid positions -> [N, D]

# Pre-activation elements encoded at once when splicing (64 MiB in float32).
CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class SpliceLosses:
    """Mean next-token cross-entropy (nats) over `n_targets` scored targets."""

    n_targets: int
    ce_clean: float
    ce_spliced: float
    ce_zero: float

    @property
    def ce_loss_recovered(self) -> float:
        """(CE_zero - CE_spliced) / (CE_zero - CE_clean); NaN when zeroing changes nothing."""
        gap = self.ce_zero - self.ce_clean
        return (self.ce_zero - self.ce_spliced) / gap if gap != 0 else math.nan


@contextmanager
def spliced(
    model: nn.Module, hookpoint: str, valid_BT: torch.Tensor, replace: Replace
) -> Iterator[None]:
    """Within the block, the hookpoint's tensor at `valid_BT` positions is `replace(x)`.

    `valid_BT` must have the shape of the next forward's input ids; other positions stay
    untouched. Every hookpoint can be written: a module's output or input is swapped,
    and `resid_mid` through what attention adds (see `probes.hookpoints.attach`).
    """

    def write(hidden_BTD: torch.Tensor) -> torch.Tensor:
        if hidden_BTD.shape[:2] != valid_BT.shape:
            raise RuntimeError(
                f"splice mask {tuple(valid_BT.shape)} does not match the hookpoint's "
                f"activations {tuple(hidden_BTD.shape)}"
            )
        mask_BT = valid_BT.to(hidden_BTD.device)
        new_BTD = hidden_BTD.clone()
        new_BTD[mask_BT] = replace(hidden_BTD[mask_BT]).to(hidden_BTD.dtype)
        return new_BTD

    handles = attach(model, parse_hookpoint(model, hookpoint), write)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def sae_replacement(sae: SparseAutoencoder, stats: ReconstructionStats | None = None) -> Replace:
    """x -> the SAE's reconstruction of x (chunked), adding each chunk to `stats` if given."""
    step = max(1, CHUNK_ELEMENTS // sae.d_sae)

    def replace(x_ND: torch.Tensor) -> torch.Tensor:
        parts = []
        for chunk in x_ND.split(step):
            codes = sae.encode_sparse(chunk.to(sae.device))
            recon = sae.decode(codes)
            if stats is not None:
                stats.update(chunk, recon, codes)
            parts.append(recon.to(x_ND.device))
        return torch.cat(parts) if parts else torch.zeros_like(x_ND)

    return replace


def zero_replacement(x_ND: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x_ND)


def next_token_ce_sum(
    model: nn.Module,
    input_ids_BT: torch.Tensor,
    attention_mask_BT: torch.Tensor,
    valid_BT: torch.Tensor,
) -> float:
    """Summed cross-entropy of the next-token predictions whose target is valid."""
    logits_BTV = model(
        input_ids=input_ids_BT, attention_mask=attention_mask_BT, use_cache=False
    ).logits
    target_BT = valid_BT[:, 1:].to(logits_BTV.device)
    logits_NV = logits_BTV[:, :-1][target_BT].float()
    targets_N = input_ids_BT[:, 1:].to(logits_BTV.device)[target_BT]
    return float(F.cross_entropy(logits_NV, targets_N, reduction="sum"))


def _row_groups(batch: TokenBatch, batch_size: int) -> Iterator[tuple[torch.Tensor, int]]:
    """(row indices, width) of length-sorted groups of rows, as the reader batches them."""
    lengths = batch.attention_mask_BT.sum(dim=1)
    order = torch.argsort(lengths, descending=True, stable=True)
    for begin in range(0, len(order), batch_size):
        rows = order[begin : begin + batch_size]
        yield rows, max(int(lengths[rows].max()), 1)


@torch.inference_mode()
def splice_losses(
    subject: SubjectModel,
    sae: SparseAutoencoder,
    hookpoint: str,
    texts: Sequence[str],
    *,
    context_length: int = 1024,
    batch_size: int = 8,
    overflow: Overflow = "window",
    window_overlap: int = 0,
    stats: ReconstructionStats | None = None,
    progress: bool = False,
) -> SpliceLosses:
    """Clean, spliced and zero-ablated next-token CE of the model on `texts`.

    When `stats` is given, the SAE quality metrics are accumulated into it from the
    same activations (the hookpoint's clean output at valid positions): one pass of
    the model serves both the CE losses and the reconstruction metrics.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    width = hookpoint_width(subject.model, hookpoint)  # a bad name fails before any work
    if sae.d_in != width:
        raise ValueError(
            f"the SAE reads {sae.d_in}-wide activations but {hookpoint} of {subject.name} "
            f"is {width} wide (d_model={subject.d_model}); use an SAE trained on this model and "
            "hookpoint"
        )
    batch = tokenize_batch(
        subject.tokenizer,
        texts,
        context_length,
        overflow,
        window_overlap,
        prefix_ids=subject.prefix_ids,
    )
    model, device = subject.model, subject.device
    sums = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
    n_targets = 0
    replace = sae_replacement(sae, stats)
    groups = list(_row_groups(batch, batch_size))
    bar = Progress(console=Console(stderr=True), transient=True) if progress else None
    with bar or nullcontext():
        task = bar.add_task("clean / spliced / zero forwards", total=len(groups)) if bar else None
        for rows, width in groups:
            ids_BT = batch.input_ids_BT[rows, :width].to(device)
            mask_BT = batch.attention_mask_BT[rows, :width].to(device)
            valid_BT = batch.valid_BT[rows, :width].to(device)
            sums["clean"] += next_token_ce_sum(model, ids_BT, mask_BT, valid_BT)
            with spliced(model, hookpoint, valid_BT, replace):
                sums["spliced"] += next_token_ce_sum(model, ids_BT, mask_BT, valid_BT)
            with spliced(model, hookpoint, valid_BT, zero_replacement):
                sums["zero"] += next_token_ce_sum(model, ids_BT, mask_BT, valid_BT)
            n_targets += int(valid_BT[:, 1:].sum())
            if bar is not None and task is not None:
                bar.advance(task)
    if n_targets == 0:
        raise ValueError("the texts hold no tokens to score; give non-empty texts")
    return SpliceLosses(
        n_targets=n_targets,
        ce_clean=sums["clean"] / n_targets,
        ce_spliced=sums["spliced"] / n_targets,
        ce_zero=sums["zero"] / n_targets,
    )
