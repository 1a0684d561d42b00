"""The evidence files: per-feature selections stored sparsely, context shards, and
atomic writes (a file is either the old one or the whole new one)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from probes.evidence.accumulators import StreamingSample, StreamingTopK
from probes.evidence.config import EvidenceError
from probes.evidence.sources import ContextChunk


def selection_tensors(part: StreamingTopK | StreamingSample) -> dict[str, Tensor]:
    """Rows in ranking order; per-token windows stored sparsely, since a feature fires on
    few tokens of a context: slot s = f * k + j holds `pos[offsets[s]:offsets[s + 1]]`
    (token positions) with `acts[...]` (float16); `peak` is each slot's most active
    position."""
    values_FK, contexts_FK, acts_FKW = part.ordered()
    slot_S, pos_S = (acts_FKW.view(-1, part.width) != 0).nonzero(as_tuple=True)
    counts = torch.bincount(slot_S, minlength=values_FK.numel())
    return {
        "values": values_FK.cpu(),
        "contexts": contexts_FK.cpu(),
        "offsets": torch.cat([counts.new_zeros(1), counts.cumsum(0)]).cpu(),
        "pos": pos_S.to(torch.int16).cpu(),
        "acts": acts_FKW.view(-1, part.width)[slot_S, pos_S].cpu(),
        "peak": acts_FKW.float().argmax(dim=2).to(torch.int16).cpu(),
    }


def concat_contexts(chunks: list[tuple[ContextChunk, Tensor]]) -> dict[str, Tensor]:
    """Context chunks (consecutive ids) as one shard: ids start at `first`."""
    token_parts, size_parts = [], []
    for contexts, _ in chunks:
        token_parts.append(contexts.token_ids)
        size_parts.append(contexts.offsets[1:] - contexts.offsets[:-1])
    return {
        "first": torch.tensor([chunks[0][0].first_id], dtype=torch.int64),
        "token_ids": torch.cat(token_parts),
        "size": torch.cat(size_parts),
        "text": torch.cat([c.text for c, _ in chunks]),
        "start": torch.cat([c.start for c, _ in chunks]),
        "split": torch.cat([s for _, s in chunks]),
    }


def concat_shards(shards: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    expected = 0
    for shard in shards:
        if int(shard["first"]) != expected:
            raise EvidenceError("the checkpoint's context shards are out of order; delete it")
        expected += shard["size"].numel()
    size = torch.cat([s["size"] for s in shards])
    return {
        "token_ids": torch.cat([s["token_ids"] for s in shards]),
        "offsets": torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(size, 0)]),
        "text": torch.cat([s["text"] for s in shards]),
        "start": torch.cat([s["start"] for s in shards]),
        "split": torch.cat([s["split"] for s in shards]),
    }


def empty_contexts() -> dict[str, Tensor]:
    return {
        "token_ids": torch.zeros(0, dtype=torch.int32),
        "offsets": torch.zeros(1, dtype=torch.int64),
        "text": torch.zeros(0, dtype=torch.int64),
        "start": torch.zeros(0, dtype=torch.int64),
        "split": torch.zeros(0, dtype=torch.uint8),
    }


def atomic_save(tensors: dict[str, Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)
