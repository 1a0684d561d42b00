"""Feeding activations to the trainer: chunk sources and a shuffling buffer.

A *chunk source* yields activation chunks [n, d_in] in a fixed order and can start at
any chunk index: `source(start) -> iterator` (or an object with `.chunks(start)`).
Restarting at the chunk where the buffer's current fill began is what makes a resumed
run see exactly the same batches. Any iterable of tensors also works; resuming then
replays it from the start and discards the chunks already used.

The buffer (like SAELens' and sparsify's mixing buffers) gathers at least
`capacity` tokens, shuffles them with its own seeded generator, and serves batches of
`batch_size` rows until fewer than a batch remain; those are carried into the next
fill. Every token of the stream is served exactly once, in order of fills.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol, runtime_checkable

import torch

ChunkFn = Callable[[int], Iterator[torch.Tensor]]


@runtime_checkable
class ChunkSource(Protocol):
    def chunks(self, start: int = 0) -> Iterator[torch.Tensor]: ...


def as_chunk_fn(source: ChunkSource | ChunkFn | Iterable[torch.Tensor]) -> ChunkFn:
    """A function start -> iterator of chunks, for any accepted kind of source."""
    if isinstance(source, ChunkSource):
        return source.chunks
    if callable(source):
        return source
    iterable = source

    def replay(start: int) -> Iterator[torch.Tensor]:
        return islice(iter(iterable), start, None)

    return replay


@dataclass
class TensorSource:
    """Activations held in memory [N, d_in], served for `epochs` passes (None: forever)
    in chunks of `chunk_tokens`, each pass in its own seeded random order."""

    acts: torch.Tensor
    chunk_tokens: int = 8192
    seed: int = 0
    shuffle: bool = True
    epochs: int | None = None

    def __post_init__(self) -> None:
        if self.acts.dim() != 2 or self.acts.shape[0] == 0:
            raise ValueError(f"acts must be a non-empty [N, d_in] tensor, got {self.acts.shape}")
        self._perm_epoch = -1
        self._perm: torch.Tensor | None = None

    @property
    def chunks_per_epoch(self) -> int:
        return math.ceil(self.acts.shape[0] / self.chunk_tokens)

    def _order(self, epoch: int) -> torch.Tensor | None:
        if not self.shuffle:
            return None
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.acts.shape[0], generator=gen)
            self._perm_epoch = epoch
        return self._perm

    def chunks(self, start: int = 0) -> Iterator[torch.Tensor]:
        index = start
        while self.epochs is None or index < self.epochs * self.chunks_per_epoch:
            epoch, i = divmod(index, self.chunks_per_epoch)
            lo, hi = i * self.chunk_tokens, min((i + 1) * self.chunk_tokens, self.acts.shape[0])
            order = self._order(epoch)
            part = (
                self.acts[lo:hi] if order is None else self.acts[order[lo:hi].to(self.acts.device)]
            )
            yield part.float()
            index += 1


class ActivationBuffer:
    """Shuffled batches [batch_size, d_in] (float32) from a chunk source.

    The final batch can be smaller when the source ends. `state_dict()` /
    `load_state_dict()` capture the position between batches (see the module docstring).
    """

    def __init__(
        self,
        source: ChunkSource | ChunkFn | Iterable[torch.Tensor],
        capacity: int,
        batch_size: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size < 1 or capacity < 1:
            raise ValueError(f"capacity and batch_size must be >= 1 ({capacity}, {batch_size})")
        self._chunk_fn = as_chunk_fn(source)
        self.capacity = max(capacity, batch_size)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self._gen = torch.Generator().manual_seed(seed)
        self._start(0, None)

    def _start(self, chunk: int, carry: torch.Tensor | None) -> None:
        self._it = self._chunk_fn(chunk)
        self._chunks_used = chunk
        self._exhausted = False
        self._carry = carry
        self._data: torch.Tensor | None = None
        self._pos = 0
        self._served = 0
        self.tokens_served = 0

    # -- filling and serving -------------------------------------------------------------

    def _fill(self) -> None:
        self._fill_chunk = self._chunks_used
        self._fill_carry = self._carry
        self._fill_rng = self._gen.get_state()
        parts = [] if self._carry is None else [self._carry]
        n = 0 if self._carry is None else self._carry.shape[0]
        while n < self.capacity and not self._exhausted:
            chunk = next(self._it, None)
            if chunk is None:
                self._exhausted = True
                break
            self._chunks_used += 1
            chunk = chunk.reshape(-1, chunk.shape[-1]).to(self.device, torch.float32)
            parts.append(chunk)
            n += chunk.shape[0]
        data = torch.cat(parts) if parts else torch.empty(0, 0, device=self.device)
        perm = torch.randperm(data.shape[0], generator=self._gen).to(self.device)
        self._data = data[perm]
        self._carry = None
        self._pos = 0
        self._served = 0

    def _remaining(self) -> int:
        return 0 if self._data is None else self._data.shape[0] - self._pos

    def next_batch(self) -> torch.Tensor | None:
        """The next batch, or None when the source is used up."""
        if self._data is None or (self._remaining() < self.batch_size and not self._exhausted):
            if self._data is not None and self._remaining() > 0:
                self._carry = self._data[self._pos :]
            self._fill()
        if self._remaining() == 0:
            return None
        assert self._data is not None
        batch = self._data[self._pos : self._pos + self.batch_size]
        self._pos += batch.shape[0]
        self._served += 1
        self.tokens_served += batch.shape[0]
        return batch

    def __iter__(self) -> Iterator[torch.Tensor]:
        while (batch := self.next_batch()) is not None:
            yield batch

    def peek(self, n: int) -> torch.Tensor:
        """Up to `n` rows of the current fill that have not been served (filling first if
        needed), without consuming them; used to initialise from a sample of the data."""
        if self._data is None:
            self._fill()
        assert self._data is not None
        return self._data[self._pos : self._pos + n]

    # -- checkpointing -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Position between batches: the fill's first chunk, its carried rows and RNG
        state, and how many of its batches were served. JSON-able except the tensors."""
        if self._data is None:
            return {"fill_chunk": 0, "served": 0, "tokens_served": 0, "carry": None, "rng": None}
        return {
            "fill_chunk": self._fill_chunk,
            "served": self._served,
            "tokens_served": self.tokens_served,
            "carry": self._fill_carry,
            "rng": self._fill_rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the fill in progress (re-reading its chunks) and skip served batches."""
        carry = state["carry"]
        self._start(int(state["fill_chunk"]), None if carry is None else carry.to(self.device))
        if state["rng"] is None:
            return
        self._gen.set_state(state["rng"])
        self._fill()
        self._pos = min(int(state["served"]) * self.batch_size, self._remaining())
        self._served = int(state["served"])
        self.tokens_served = int(state["tokens_served"])
