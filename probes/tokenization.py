"""Batched tokenization that keeps every token's string and character offsets.

Long texts are split into windows (or truncated, with a warning). Padding and special
tokens (BOS and the like) are marked so they never yield activations.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from probes.activations import TokenSpan

log = logging.getLogger(__name__)

Overflow = Literal["window", "truncate"]


def token_spans(tokenizer: Any, text: str) -> list[TokenSpan]:
    """All tokens of `text` (no special tokens) with their strings and character offsets."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [TokenSpan(text[s:e], s, e) for s, e in enc["offset_mapping"]]


def special_prefix_ids(tokenizer: Any) -> list[int]:
    """Token ids the tokenizer puts before every text (e.g. [BOS]); empty for SmolLM2."""
    return list(tokenizer("", add_special_tokens=True)["input_ids"])


@dataclass
class TokenBatch:
    """A padded batch of windows. Row r holds tokens of text `row_text[r]`.

    `valid_BT` is True exactly where a token should yield an activation: not padding,
    not a special token, not left context repeated from the previous window.
    `row_token_start[r]` is the index (in that text's token list) of the row's first
    valid token; valid tokens of a row are consecutive.
    """

    input_ids_BT: torch.Tensor
    attention_mask_BT: torch.Tensor
    valid_BT: torch.Tensor
    row_text: list[int]
    row_token_start: list[int]
    spans: list[list[TokenSpan]]  # per text, all of its tokens

    def texts_slice(self, begin: int, end: int) -> TokenBatch:
        """The rows of this batch's texts begin..end-1 as a batch of their own (texts
        renumbered from 0): what tokenizing those texts alone gives, up to padding."""
        rows = [r for r, t in enumerate(self.row_text) if begin <= t < end]
        first, last = (rows[0], rows[-1] + 1) if rows else (0, 0)
        return TokenBatch(
            input_ids_BT=self.input_ids_BT[first:last],
            attention_mask_BT=self.attention_mask_BT[first:last],
            valid_BT=self.valid_BT[first:last],
            row_text=[t - begin for t in self.row_text[first:last]],
            row_token_start=self.row_token_start[first:last],
            spans=self.spans[begin:end],
        )

    def to(self, device: torch.device | str) -> TokenBatch:
        self.input_ids_BT = self.input_ids_BT.to(device)
        self.attention_mask_BT = self.attention_mask_BT.to(device)
        self.valid_BT = self.valid_BT.to(device)
        return self


def tokenize_batch(
    tokenizer: Any,
    texts: Sequence[str],
    context_length: int,
    overflow: Overflow = "window",
    window_overlap: int = 0,
    prefix_ids: Sequence[int] | None = None,
    with_spans: bool = True,
) -> TokenBatch:
    """Tokenize `texts` into padded rows of at most `context_length` tokens.

    overflow="window": a long text becomes several rows; each row after the first starts
    with `window_overlap` tokens of left context that are attention-only (not valid).
    overflow="truncate": tokens past the context are dropped, with a warning.
    `prefix_ids` go before every row (never valid); None means the tokenizer's own
    special prefix, e.g. [BOS]. with_spans=False leaves `spans` empty (faster when only
    token ids are needed). All texts go to the tokenizer in one call (parallel in Rust).
    """
    prefix = special_prefix_ids(tokenizer) if prefix_ids is None else list(prefix_ids)
    room = context_length - len(prefix)
    if room <= window_overlap:
        raise ValueError(
            f"context_length={context_length} leaves no room for tokens after "
            f"{len(prefix)} special token(s) and window_overlap={window_overlap}"
        )
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0

    rows: list[tuple[list[int], int, int, int]] = []  # ids, n_context, text index, start
    all_spans: list[list[TokenSpan]] = []
    encoded: Any = (
        tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=with_spans)
        if texts
        else {"input_ids": [], "offset_mapping": []}
    )
    for text_idx, text in enumerate(texts):
        ids: list[int] = list(encoded["input_ids"][text_idx])
        offsets = encoded["offset_mapping"][text_idx] if with_spans else []
        all_spans.append([TokenSpan(text[s:e], s, e) for s, e in offsets])
        if len(ids) > room and overflow == "truncate":
            log.warning(
                "text %d has %d tokens; truncated to %d (context_length=%d)",
                text_idx,
                len(ids),
                room,
                context_length,
            )
            all_spans[-1] = all_spans[-1][:room]
            ids = ids[:room]
        start = 0
        while True:
            ctx = min(window_overlap, start)
            chunk = ids[start - ctx : start - ctx + room]
            rows.append((chunk, ctx, text_idx, start))
            start += len(chunk) - ctx
            if start >= len(ids):
                break

    # at least one column, so a batch of empty texts is still a valid model input
    width = max([len(prefix) + len(r[0]) for r in rows] + [len(prefix), 1])
    n = len(rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    valid = torch.zeros((n, width), dtype=torch.bool)
    for r, (chunk, ctx, _, _) in enumerate(rows):
        seq = prefix + chunk
        input_ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[r, : len(seq)] = 1
        valid[r, len(prefix) + ctx : len(seq)] = True
    return TokenBatch(
        input_ids_BT=input_ids,
        attention_mask_BT=attention,
        valid_BT=valid,
        row_text=[r[2] for r in rows],
        row_token_start=[r[3] for r in rows],
        spans=all_spans,
    )
