"""What the evidence pass reads: chunks of texts cut into fixed-width contexts, and the
features' activations on them as COO entries on the accumulators' device.

A *context* is a run of at most `width` consecutive tokens of one text (one model row):
the unit that is ranked, sampled, shown to explainers and scored. Contexts get global ids
in corpus order, so the same corpus and settings always give the same ids.

Two readers speak this interface:
- `SAEChunkReader`: the subject model (stopped after the hookpoint) and an SAE, batched
  and length-sorted as `ActivationReader` does, encoded on the model's device; contexts
  are cut from each model row, so none straddles two batches.
- `SourceChunkReader`: any `FeatureSource` (planted features), one text at a time as the
  source reads it; contexts are cut from each text's tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from probes.activations import FeatureSource
from probes.reader import ActivationReader
from probes.sae_runner import encode_entries
from sae.base import SparseAutoencoder


@dataclass
class ContextChunk:
    """The contexts of one chunk of texts, in id order starting at `first_id` (CPU).

    Context i holds `token_ids[offsets[i]:offsets[i+1]]`, which are tokens
    `start[i]...` of text `text[i]` (a corpus-wide text index).
    """

    first_id: int
    token_ids: Tensor  # int32 [n_tokens]
    offsets: Tensor  # int64 [n_contexts + 1]
    text: Tensor  # int64 [n_contexts]
    start: Tensor  # int64 [n_contexts]

    @property
    def n_contexts(self) -> int:
        return self.text.numel()


@dataclass
class EntryBatch:
    """One batch of activations: entry n says token `pos_N[n]` of context `context_N[n]`
    activates `feature_N[n]` with `value_N[n]`. `contexts_C` lists every context of the
    batch (also those where nothing fires); `n_tokens` counts their tokens."""

    context_N: Tensor
    pos_N: Tensor
    feature_N: Tensor
    value_N: Tensor
    contexts_C: Tensor
    n_tokens: int


class ChunkReader(Protocol):
    """Turns a chunk of texts into its contexts and a stream of entry batches."""

    @property
    def n_features(self) -> int: ...

    def read(
        self, texts: Sequence[str], first_text: int, first_context: int, width: int
    ) -> tuple[ContextChunk, Iterator[EntryBatch]]: ...


def _cut_contexts(lengths: Sequence[int], width: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cut runs of tokens (rows or texts) of `lengths` into contexts of <= width tokens.

    Returns, per run, the index of its first context, and per context its run, its start
    token inside the run and its length. An empty run gets no context.
    """
    length_R = torch.tensor(list(lengths), dtype=torch.int64)
    n_ctx_R = (length_R + width - 1) // width
    first_R = torch.cumsum(n_ctx_R, 0) - n_ctx_R
    run_C = torch.repeat_interleave(torch.arange(len(length_R)), n_ctx_R)
    index_C = torch.arange(run_C.numel()) - first_R[run_C]
    start_C = index_C * width
    size_C = torch.minimum(length_R[run_C] - start_C, torch.tensor(width))
    return first_R, run_C, start_C, size_C


def _offsets(size_C: Tensor) -> Tensor:
    return torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(size_C, 0)])


@dataclass
class SAEChunkReader:
    """The SAE's features read at `reader`'s (single) hookpoint of the subject model."""

    reader: ActivationReader
    sae: SparseAutoencoder

    def __post_init__(self) -> None:
        if len(self.reader.hookpoints) != 1:
            raise ValueError("the evidence pass reads exactly one hookpoint")
        if self.sae.d_in != self.reader.subject.d_model:
            raise ValueError(
                f"the SAE reads {self.sae.d_in}-wide activations but the model has "
                f"d_model={self.reader.subject.d_model}; use an SAE trained on this model"
            )

    @property
    def n_features(self) -> int:
        return self.sae.d_sae

    def read(
        self, texts: Sequence[str], first_text: int, first_context: int, width: int
    ) -> tuple[ContextChunk, Iterator[EntryBatch]]:
        batch = self.reader.tokenize(texts, with_spans=False)
        valid_BT = batch.valid_BT
        first_R, row_C, start_C, size_C = _cut_contexts(valid_BT.sum(1).tolist(), width)
        row_start = torch.tensor(batch.row_token_start, dtype=torch.int64)
        row_text = torch.tensor(batch.row_text, dtype=torch.int64)
        contexts = ContextChunk(
            first_id=first_context,
            token_ids=batch.input_ids_BT[valid_BT].to(torch.int32),
            offsets=_offsets(size_C),
            text=first_text + row_text[row_C],
            start=row_start[row_C] + start_C,
        )
        return contexts, self._batches(batch, first_context + first_R, width)

    @torch.inference_mode()
    def _batches(self, batch: Any, first_ctx_R: Tensor, width: int) -> Iterator[EntryBatch]:
        hookpoint = self.reader.hookpoints[0]
        device = self.sae.device
        for rows, acts in self.reader.batches(batch):
            acts_BTD = acts[hookpoint]
            valid_BT = batch.valid_BT[rows, : acts_BTD.shape[1]].to(acts_BTD.device)
            # Valid tokens of a row are consecutive: the r-th is token r of the row.
            rank_BT = valid_BT.cumsum(dim=1) - 1
            row_N, col_N = valid_BT.nonzero(as_tuple=True)
            rank_N = rank_BT[row_N, col_N]
            context_T = first_ctx_R.to(device)[rows.to(device)][row_N] + rank_N // width
            pos_T = rank_N % width
            token_N, feature_N, value_N = encode_entries(self.sae, acts_BTD[valid_BT])
            yield EntryBatch(
                context_N=context_T[token_N],
                pos_N=pos_T[token_N],
                feature_N=feature_N,
                value_N=value_N.float(),
                contexts_C=torch.unique(context_T),
                n_tokens=int(row_N.numel()),
            )


@dataclass
class SourceChunkReader:
    """Any `FeatureSource` (e.g. planted features) over texts tokenized by `tokenizer`,
    the tokenizer the source itself uses. Entries go to `device`."""

    source: FeatureSource
    tokenizer: Any
    device: torch.device | str = "cpu"

    @property
    def n_features(self) -> int:
        return len(self.source.feature_names)

    def read(
        self, texts: Sequence[str], first_text: int, first_context: int, width: int
    ) -> tuple[ContextChunk, Iterator[EntryBatch]]:
        acts = self.source.activations(texts)
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        for i, (text_acts, text_ids) in enumerate(zip(acts, ids, strict=True)):
            if len(text_acts.tokens) != len(text_ids):
                raise ValueError(
                    f"text {first_text + i}: the source gave {len(text_acts.tokens)} tokens "
                    f"but the tokenizer {len(text_ids)}; give the tokenizer the source uses"
                )
        first_X, text_C, start_C, size_C = _cut_contexts([len(t) for t in ids], width)
        contexts = ContextChunk(
            first_id=first_context,
            token_ids=torch.tensor([t for row in ids for t in row], dtype=torch.int32),
            offsets=_offsets(size_C),
            text=first_text + text_C,
            start=start_C,
        )
        counts = [a.token_pos_N.numel() for a in acts]
        text_N = torch.repeat_interleave(torch.arange(len(acts)), torch.tensor(counts))
        token_N = torch.cat([a.token_pos_N.long() for a in acts]) if acts else torch.zeros(0)
        batch = EntryBatch(
            context_N=first_context + first_X[text_N] + token_N.long() // width,
            pos_N=token_N.long() % width,
            feature_N=torch.cat([a.feature_N.long() for a in acts]) if acts else token_N.long(),
            value_N=torch.cat([a.value_N.float() for a in acts]) if acts else token_N.float(),
            contexts_C=first_context + torch.arange(contexts.n_contexts),
            n_tokens=sum(len(t) for t in ids),
        )
        moved = EntryBatch(
            context_N=batch.context_N.to(self.device),
            pos_N=batch.pos_N.to(self.device),
            feature_N=batch.feature_N.to(self.device),
            value_N=batch.value_N.to(self.device),
            contexts_C=batch.contexts_C.to(self.device),
            n_tokens=batch.n_tokens,
        )
        return contexts, iter([moved])


def merge_batches(batches: list[EntryBatch]) -> EntryBatch:
    """One batch holding all of `batches` (an empty chunk gives an empty batch)."""
    if len(batches) == 1:
        return batches[0]
    if not batches:
        empty = torch.zeros(0, dtype=torch.int64)
        return EntryBatch(empty, empty, empty, empty.float(), empty, 0)
    return EntryBatch(
        context_N=torch.cat([b.context_N for b in batches]),
        pos_N=torch.cat([b.pos_N for b in batches]),
        feature_N=torch.cat([b.feature_N for b in batches]),
        value_N=torch.cat([b.value_N for b in batches]),
        contexts_C=torch.cat([b.contexts_C for b in batches]),
        n_tokens=sum(b.n_tokens for b in batches),
    )


def n_chunks(n_texts: int, texts_per_chunk: int) -> int:
    return math.ceil(n_texts / texts_per_chunk)
