"""A stream of one hookpoint's activations over a list of texts, for training SAEs.

Texts are taken in a seeded random order (a new order each pass), `texts_per_chunk` at a
time; each group is tokenized (windows as in `ActivationReader`), run through the model
in length-sorted batches of the reader's `batch_size` rows, and yielded as ONE float
tensor [n_tokens, d_model] of its valid tokens only: no special prefix, no padding, no
repeated window context. No packing: every text is read on its own, as it is at
inference, and length-sorted batches already keep padding low.

Chunk i is always the same group of texts, so `chunks(start)` can begin anywhere
without running the model on the skipped groups (this is what makes resuming an SAE
training run cheap and exact).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from probes.reader import ActivationReader
from probes.token_cache import TokenCache

TEXTS_PER_CHUNK = 256  # ~12k tokens of the default corpus per chunk


@dataclass
class ActivationStream:
    """Activations of `hookpoint` (one of the reader's) over `texts`, chunk by chunk.

    epochs: passes over the texts (None: forever; the consumer stops). shuffle: a seeded
    random text order per pass (else the given order). on_tokens: called with the number
    of tokens of each chunk as it is yielded (e.g. to advance a progress bar).
    tokens: the token cache of `texts` (rows are cut from it instead of tokenizing).
    `tokens_read` counts the tokens yielded so far.
    """

    reader: ActivationReader
    texts: Sequence[str]
    hookpoint: str
    texts_per_chunk: int = TEXTS_PER_CHUNK
    epochs: int | None = 1
    shuffle: bool = True
    seed: int = 0
    on_tokens: Callable[[int], None] | None = None
    tokens: TokenCache | None = None
    tokens_read: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.hookpoint not in self.reader.hookpoints:
            raise ValueError(
                f"hookpoint {self.hookpoint!r} is not read by this reader "
                f"({', '.join(self.reader.hookpoints)})"
            )
        if not self.texts:
            raise ValueError("the stream has no texts; give at least one")
        if self.texts_per_chunk < 1:
            raise ValueError(f"texts_per_chunk must be >= 1, got {self.texts_per_chunk}")
        if self.tokens is not None and self.tokens.n_texts != len(self.texts):
            raise ValueError(
                f"the token cache holds {self.tokens.n_texts} texts, not the stream's "
                f"{len(self.texts)}; give the cache of these texts"
            )

    @property
    def chunks_per_epoch(self) -> int:
        return math.ceil(len(self.texts) / self.texts_per_chunk)

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.texts)))
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def chunks(self, start: int = 0) -> Iterator[torch.Tensor]:
        """Chunks [n, d_model] (float32, CPU) from chunk index `start` on."""
        index = start
        epoch, order = -1, []
        while self.epochs is None or index < self.epochs * self.chunks_per_epoch:
            e, i = divmod(index, self.chunks_per_epoch)
            if e != epoch:
                epoch, order = e, self._order(e)
            group = order[i * self.texts_per_chunk :][: self.texts_per_chunk]
            acts = self._read(group)
            self.tokens_read += acts.shape[0]
            if self.on_tokens is not None:
                self.on_tokens(acts.shape[0])
            yield acts
            index += 1

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self.chunks(0)

    def _read(self, group: list[int]) -> torch.Tensor:
        if self.tokens is not None:
            batch = self.reader.cached_batch(self.tokens, group)
        else:
            batch = self.reader.tokenize([self.texts[j] for j in group], with_spans=False)
        parts = []
        for rows, acts in self.reader.batches(batch):
            acts_BTD = acts[self.hookpoint]
            valid_BT = batch.valid_BT[rows, : acts_BTD.shape[1]].to(acts_BTD.device)
            parts.append(acts_BTD[valid_BT].float().cpu())
        if not parts:
            return torch.empty(0, self.reader.subject.d_model)
        return torch.cat(parts)


def read_activations(
    stream: ActivationStream, max_tokens: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The stream's first `max_tokens` activations (fewer when it ends first) as one
    [N, d_model] tensor of `dtype`, filled chunk by chunk (no second copy)."""
    out = torch.empty(max_tokens, stream.reader.subject.d_model, dtype=dtype)
    n = 0
    for chunk in stream:
        take = min(chunk.shape[0], max_tokens - n)
        out[n : n + take] = chunk[:take].to(dtype)
        n += take
        if n >= max_tokens:
            break
    return out[:n]
