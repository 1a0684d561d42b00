"""The subject model with an SAE's reconstruction spliced in at a hookpoint: CE-loss recovered.

Three full forward passes per batch, each scored by next-token cross-entropy:
clean (untouched), spliced (the hookpoint's output replaced by the SAE reconstruction)
and zero-ablated (replaced by zeros). SAEBench's "CE loss score":

    ce_loss_recovered = (CE_zero - CE_spliced) / (CE_zero - CE_clean)

1.0: the reconstruction is as good as the real activations; 0.0: no better than zeros.

The dictionary's own `reconstruct(x)` makes the replacement, so run-time input
normalisation is undone and a skip term added as the dictionary defines them. A
transcoder reads its input hookpoint (e.g. layers.N.mlp_in) and its prediction replaces
its output hookpoint (layers.N.mlp); zero-ablation zeroes that output hookpoint.

Only positions that yield activations are replaced: never the prefix (BOS or sink
token), padding, or a window's repeated left context. Cross-entropy is averaged over
valid next-token targets: position t predicting token t+1 where token t+1 is valid, so
every token of every text is scored once (its first token too when a prefix precedes it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import Progress
from torch import nn

from probes.hookpoints import attach, hookpoint_width, parse_hookpoint
from probes.model import SubjectModel
from probes.tokenization import Overflow, TokenBatch, tokenize_batch
from sae.architectures.transcoder import TRANSCODERS
from sae.base import SAEError, SparseAutoencoder
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


def reconstruct_chunked(
    sae: SparseAutoencoder,
    x_ND: torch.Tensor,
    target_ND: torch.Tensor,
    stats: ReconstructionStats | None = None,
) -> torch.Tensor:
    """`sae.reconstruct(x)` in chunks (no dense [N, d_sae] codes at once), on x's device;
    each chunk's output is scored against `target` (x itself for an SAE) into `stats`."""
    step = max(1, CHUNK_ELEMENTS // sae.d_sae)
    parts = []
    for chunk, target in zip(x_ND.split(step), target_ND.split(step), strict=True):
        codes, out = sae.reconstruct(chunk.to(sae.device))
        if stats is not None:
            stats.update(target, out, codes)
        parts.append(out.to(x_ND.device))
    return torch.cat(parts) if parts else torch.zeros_like(target_ND)


def sae_replacement(sae: SparseAutoencoder, stats: ReconstructionStats | None = None) -> Replace:
    """x -> the SAE's reconstruction of x, adding each chunk to `stats` if given."""
    return lambda x_ND: reconstruct_chunked(sae, x_ND, x_ND, stats)


@contextmanager
def sae_spliced(
    model: nn.Module,
    sae: SparseAutoencoder,
    hookpoint: str,
    output_hookpoint: str,
    valid_BT: torch.Tensor,
    stats: ReconstructionStats | None = None,
) -> Iterator[None]:
    """Within the block, `output_hookpoint`'s tensor at `valid_BT` is the dictionary's
    output for `hookpoint`'s: an SAE's reconstruction in place (the same hookpoint), a
    transcoder's prediction (read at its input, written at its output)."""
    if output_hookpoint == hookpoint:
        with spliced(model, hookpoint, valid_BT, sae_replacement(sae, stats)):
            yield
        return
    source, target = parse_hookpoint(model, hookpoint), parse_hookpoint(model, output_hookpoint)
    if source.depth >= target.depth:
        raise SAEError(
            f"the transcoder reads {hookpoint} and writes {output_hookpoint}, which the model "
            "computes first; its output hookpoint must come after its input"
        )
    inputs: list[torch.Tensor] = []

    def keep(x_BTD: torch.Tensor) -> None:
        inputs.append(x_BTD[valid_BT.to(x_BTD.device)])

    def replace(y_ND: torch.Tensor) -> torch.Tensor:
        return reconstruct_chunked(sae, inputs.pop(), y_ND, stats)

    with ExitStack() as stack:
        for handle in attach(model, source, keep):
            stack.callback(handle.remove)
        stack.enter_context(spliced(model, output_hookpoint, valid_BT, replace))
        yield


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
    output_hookpoint: str | None = None,
    context_length: int = 1024,
    batch_size: int = 8,
    overflow: Overflow = "window",
    window_overlap: int = 0,
    stats: ReconstructionStats | None = None,
    progress: bool = False,
) -> SpliceLosses:
    """Clean, spliced and zero-ablated next-token CE of the model on `texts`.

    `hookpoint` is where the dictionary reads; `output_hookpoint` where its output is
    written (None: `hookpoint`; a transcoder's must be given). When `stats` is given,
    the quality metrics are accumulated into it from the same forwards (the output
    hookpoint's clean activations at valid positions against the dictionary's output):
    one pass of the model serves both the CE losses and the reconstruction metrics.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if output_hookpoint is None and isinstance(sae, TRANSCODERS):
        raise SAEError(
            f"the {sae.cfg.architecture} reads {hookpoint} but records no output hookpoint "
            "to write its prediction to; set output_hookpoint in its config"
        )
    written = output_hookpoint or hookpoint
    _check_width(subject, hookpoint, sae.d_in, "reads")  # a bad name fails before any work
    _check_width(subject, written, sae.d_out, "writes")
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
    groups = list(_row_groups(batch, batch_size))
    bar = Progress(console=Console(stderr=True), transient=True) if progress else None
    with bar or nullcontext():
        task = bar.add_task("clean / spliced / zero forwards", total=len(groups)) if bar else None
        for rows, width in groups:
            ids_BT = batch.input_ids_BT[rows, :width].to(device)
            mask_BT = batch.attention_mask_BT[rows, :width].to(device)
            valid_BT = batch.valid_BT[rows, :width].to(device)
            sums["clean"] += next_token_ce_sum(model, ids_BT, mask_BT, valid_BT)
            with sae_spliced(model, sae, hookpoint, written, valid_BT, stats):
                sums["spliced"] += next_token_ce_sum(model, ids_BT, mask_BT, valid_BT)
            with spliced(model, written, valid_BT, zero_replacement):
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


def _check_width(subject: SubjectModel, hookpoint: str, width: int, verb: str) -> None:
    actual = hookpoint_width(subject.model, hookpoint)
    if actual != width:
        raise ValueError(
            f"the SAE {verb} {width}-wide activations but {hookpoint} of {subject.name} "
            f"is {actual} wide (d_model={subject.d_model}); use an SAE trained on this model "
            "and hookpoint"
        )
