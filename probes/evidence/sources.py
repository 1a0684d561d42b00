"""What the evidence pass reads: chunks of texts cut into fixed-width contexts, and the
features' activations on them as COO entries on the accumulators' device.

A *context* is a run of at most `width` consecutive tokens of one text (one model row):
the unit that is ranked, sampled, shown to explainers and scored. Contexts get global ids
in corpus order, so the same corpus and settings always give the same ids.

Two readers speak this interface:
- `SAEChunkReader`: the subject model (stopped after the hookpoint) and an SAE, batched
  and length-sorted as `ActivationReader` does, encoded on the model's device; contexts
  are cut from each model row, so none straddles two rows.
- `CachedChunkReader`: the same SAE over an activation cache of the hookpoint (no
  model run); the same rows, contexts and entries as `SAEChunkReader`, byte for byte.
- `SourceChunkReader`: any `FeatureSource` (planted features), one text at a time as the
  source reads it; contexts are cut from each text's tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Protocol

import torch
from torch import Tensor

from probes.activation_cache import ActivationCache, CacheDtype, round_to
from probes.activations import FeatureSource
from probes.reader import ActivationReader
from probes.sae_runner import encode_entries
from probes.token_cache import TokenCache
from probes.tokenization import TokenBatch
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


def _row_contexts(
    batch: TokenBatch, first_text: int, first_context: int, width: int
) -> ContextChunk:
    """The contexts of a batch of model rows of consecutive texts: each row cut into runs
    of <= width valid tokens, in row (= corpus) order."""
    valid_BT = batch.valid_BT
    _, row_C, start_C, size_C = _cut_contexts(valid_BT.sum(1).tolist(), width)
    row_start = torch.tensor(batch.row_token_start, dtype=torch.int64)
    row_text = torch.tensor(batch.row_text, dtype=torch.int64)
    return ContextChunk(
        first_id=first_context,
        token_ids=batch.input_ids_BT[valid_BT].to(torch.int32),
        offsets=_offsets(size_C),
        text=first_text + row_text[row_C],
        start=row_start[row_C] + start_C,
    )


@torch.inference_mode()
def _encoded(sae: SparseAutoencoder, acts_TD: Tensor, contexts: ContextChunk) -> EntryBatch:
    """The SAE's entries for the chunk's tokens, `acts_TD` in corpus order (one row per
    token of `contexts`): the same bytes in give the same entries out."""
    device = sae.device
    size_C = torch.diff(contexts.offsets)
    local_T = torch.repeat_interleave(torch.arange(contexts.n_contexts), size_C)
    pos_T = torch.arange(int(contexts.offsets[-1])) - contexts.offsets[local_T]
    token_N, feature_N, value_N = encode_entries(sae, acts_TD)
    token_N = token_N.to("cpu")
    return EntryBatch(
        context_N=(contexts.first_id + local_T[token_N]).to(device),
        pos_N=pos_T[token_N].to(device),
        feature_N=feature_N,
        value_N=value_N.float(),
        contexts_C=(contexts.first_id + torch.arange(contexts.n_contexts)).to(device),
        n_tokens=int(contexts.offsets[-1]),
    )


@dataclass
class SAEChunkReader:
    """The SAE's features read at `reader`'s (single) hookpoint of the subject model.

    `tokens`: the corpus' token cache (rows are cut from it instead of tokenizing each
    chunk again). `activation_dtype`: activations are rounded to it before encoding, as an
    activation cache stores them, so a pass from the model and one from the cache agree
    byte for byte (None: full precision). `texts_per_read`: the model reads at most this
    many texts together, in runs aligned to its multiples in the corpus, as an activation
    cache built with that chunk size reads them (None: a whole chunk at once). It matters
    because the rows that share a forward change the activations' last bits in bfloat16.
    """

    reader: ActivationReader
    sae: SparseAutoencoder
    tokens: TokenCache | None = None
    activation_dtype: CacheDtype | None = "float16"
    texts_per_read: int | None = None

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
        if self.tokens is not None:
            indices = torch.arange(first_text, first_text + len(texts)).numpy()
            batch = self.reader.cached_batch(self.tokens, indices)
        else:
            batch = self.reader.tokenize(texts, with_spans=False)
        contexts = _row_contexts(batch, first_text, first_context, width)
        runs = read_runs(first_text, len(texts), self.texts_per_read)
        local_runs = [(begin - first_text, end - first_text) for begin, end in runs]
        return contexts, self._entries(batch, local_runs, contexts)

    def _entries(
        self, batch: TokenBatch, runs: list[tuple[int, int]], contexts: ContextChunk
    ) -> Iterator[EntryBatch]:
        # A generator: the model runs when the pass iterates it, not in the prefetch thread.
        hookpoint = self.reader.hookpoints[0]
        with torch.inference_mode():
            parts = [
                self.reader.read_tokens(batch.texts_slice(begin, end), hookpoint)
                for begin, end in runs
            ]
        acts_TD = parts[0] if len(parts) == 1 else torch.cat(parts)
        if self.activation_dtype is not None:
            acts_TD = round_to(acts_TD, self.activation_dtype)
        yield _encoded(self.sae, acts_TD, contexts)


@dataclass
class CachedChunkReader:
    """The SAE's features over an activation cache of its hookpoint: the model is not run.
    `reader` gives the rows' shape (context length, windows); its model is not called."""

    cache: ActivationCache
    tokens: TokenCache
    reader: ActivationReader
    sae: SparseAutoencoder

    def __post_init__(self) -> None:
        if self.cache.manifest.tokens_key != self.tokens.key:
            raise ValueError("the activation cache was read from another corpus or tokenizer")
        if self.sae.d_in != self.cache.manifest.d_model:
            raise ValueError(
                f"the SAE reads {self.sae.d_in}-wide activations but the cache holds "
                f"{self.cache.manifest.d_model}-wide ones; use an SAE trained on this model"
            )

    @property
    def n_features(self) -> int:
        return self.sae.d_sae

    def read(
        self, texts: Sequence[str], first_text: int, first_context: int, width: int
    ) -> tuple[ContextChunk, Iterator[EntryBatch]]:
        last = first_text + len(texts)
        if last > self.cache.n_texts:
            raise ValueError(
                f"texts up to {last} asked for but the activation cache holds {self.cache.n_texts}"
            )
        batch = self.reader.cached_batch(self.tokens, torch.arange(first_text, last).numpy())
        contexts = _row_contexts(batch, first_text, first_context, width)
        offsets = self.tokens.text_offsets
        return contexts, self._entries(int(offsets[first_text]), int(offsets[last]), contexts)

    def _entries(self, begin: int, end: int, contexts: ContextChunk) -> Iterator[EntryBatch]:
        yield _encoded(self.sae, self.cache.tokens(begin, end).to(self.sae.device), contexts)


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


def read_runs(first_text: int, n_texts: int, per_read: int | None) -> list[tuple[int, int]]:
    """The [begin, end) corpus text ranges that split texts first_text.. (n_texts of
    them) at the multiples of `per_read` (one range when None)."""
    end = first_text + n_texts
    if per_read is None:
        return [(first_text, end)]
    cuts = range((first_text // per_read + 1) * per_read, end, per_read)
    bounds = [first_text, *cuts, end]
    return list(pairwise(bounds))


def n_chunks(n_texts: int, texts_per_chunk: int) -> int:
    return math.ceil(n_texts / texts_per_chunk)
