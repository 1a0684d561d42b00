"""A corpus tokenized once: every text's token ids in one memory-mapped array.

Readers of a corpus (the evidence pass, the activation cache, SAE training) cut their
model rows from it by array slicing instead of tokenizing each text again in Python.
The cache is keyed by the corpus (its hash) and the tokenizer (a hash of its full
definition), so a changed corpus or tokenizer never reads stale ids.

Files in the cache folder: `tokens.i32` (raw int32 token ids, every text's tokens in
corpus order, no special tokens), `text_offsets.npy` (int64 [n_texts + 1]: text i is
`tokens[offsets[i]:offsets[i+1]]`), `splits-<fraction>-<seed>.npy` (the evidence
split label of every text, written when first asked for) and `manifest.json` (written
last: its presence means the cache is complete).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from errors import UserError
from probes.corpus import corpus_hash, text_splits
from probes.tokenization import Overflow, TokenBatch, special_prefix_ids

log = logging.getLogger(__name__)

TOKEN_CACHE_VERSION = 1
TEXTS_PER_CALL = 2048  # texts per tokenizer call (the fast tokenizer batches in Rust)


class TokenCacheError(UserError):
    """A token cache cannot be built or read; the message says why and what to do."""


class TokenCacheManifest(BaseModel):
    version: int = TOKEN_CACHE_VERSION
    key: str
    corpus_hash: str
    tokenizer: str  # the tokenizer's name or path, for people
    tokenizer_hash: str
    n_texts: int
    n_tokens: int


def tokenizer_hash(tokenizer: Any) -> str:
    """A hash of everything that decides the token ids: the fast tokenizer's whole
    definition (vocabulary, merges, normalizer, pre-tokenizer), else its vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        blob = backend.to_str()
    else:
        blob = json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.blake2b(blob.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def cache_key(corpus: str, tokenizer_digest: str) -> str:
    blob = f"{TOKEN_CACHE_VERSION}:{corpus}:{tokenizer_digest}"
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


@dataclass
class TokenCache:
    """An opened token cache (read-only, memory-mapped)."""

    folder: Path
    manifest: TokenCacheManifest
    token_ids: np.ndarray  # int32 [n_tokens]
    text_offsets: np.ndarray  # int64 [n_texts + 1]

    @property
    def n_texts(self) -> int:
        return self.manifest.n_texts

    @property
    def n_tokens(self) -> int:
        return self.manifest.n_tokens

    @property
    def key(self) -> str:
        return self.manifest.key

    def text_lengths(self, texts: np.ndarray | None = None) -> np.ndarray:
        """Token counts of the given text indices (all texts when None), int64."""
        lengths = np.diff(self.text_offsets)
        return lengths if texts is None else lengths[texts]

    def splits(self, texts: Sequence[str], score_fraction: float, seed: int) -> np.ndarray:
        """The evidence split label (uint8) of every text, computed from `texts` (this
        cache's corpus) once per (fraction, seed) and then read from the folder."""
        path = self.folder / f"splits-{score_fraction!r}-{seed}.npy"
        if path.is_file():
            return np.load(path)
        if len(texts) != self.n_texts:
            raise TokenCacheError(
                f"{len(texts)} texts given for a token cache of {self.n_texts}; give its corpus"
            )
        labels = text_splits(texts, score_fraction, seed).numpy()
        _atomic_npy(path, labels)
        return labels


def open_token_cache(folder: Path) -> TokenCache | None:
    """The cache in `folder`, or None when it is absent or unfinished."""
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = TokenCacheManifest.model_validate_json(path.read_text())
    except ValueError as error:
        raise TokenCacheError(
            f"{path} is not a token cache manifest ({error}); delete {folder}"
        ) from error
    if manifest.version != TOKEN_CACHE_VERSION:
        return None
    offsets = np.load(folder / "text_offsets.npy")
    if manifest.n_tokens == 0:
        ids = np.zeros(0, dtype=np.int32)
    else:
        ids = np.memmap(folder / "tokens.i32", dtype=np.int32, mode="r", shape=(manifest.n_tokens,))
    if len(offsets) != manifest.n_texts + 1 or int(offsets[-1]) != manifest.n_tokens:
        raise TokenCacheError(f"the token cache in {folder} is inconsistent; delete the folder")
    return TokenCache(folder, manifest, ids, offsets)


def token_cache(
    root: Path,
    texts: Sequence[str],
    tokenizer: Any,
    *,
    corpus: str | None = None,
    on_texts: Callable[[int], None] | None = None,
) -> TokenCache:
    """The token cache of `texts` under `root` (a folder of caches), built when absent.
    `corpus`: the texts' hash when the caller already has it. `on_texts(n)` is called as
    texts are tokenized (progress)."""
    corpus = corpus or corpus_hash(texts)
    digest = tokenizer_hash(tokenizer)
    key = cache_key(corpus, digest)
    folder = root / key
    opened = open_token_cache(folder)
    if opened is not None:
        return opened
    return _build(folder, key, corpus, digest, texts, tokenizer, on_texts)


def _build(
    folder: Path,
    key: str,
    corpus: str,
    digest: str,
    texts: Sequence[str],
    tokenizer: Any,
    on_texts: Callable[[int], None] | None,
) -> TokenCache:
    shutil.rmtree(folder, ignore_errors=True)  # an unfinished build starts over (seconds)
    folder.mkdir(parents=True)
    lengths = np.zeros(len(texts), dtype=np.int64)
    with open(folder / "tokens.i32", "wb") as out:
        for begin in range(0, len(texts), TEXTS_PER_CALL):
            part = list(texts[begin : begin + TEXTS_PER_CALL])
            ids = tokenizer(part, add_special_tokens=False)["input_ids"]
            for i, row in enumerate(ids):
                lengths[begin + i] = len(row)
            flat = np.fromiter((t for row in ids for t in row), dtype=np.int32)
            out.write(flat.tobytes())
            if on_texts is not None:
                on_texts(len(part))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    np.save(folder / "text_offsets.npy", offsets)
    manifest = TokenCacheManifest(
        key=key,
        corpus_hash=corpus,
        tokenizer=str(getattr(tokenizer, "name_or_path", type(tokenizer).__name__)),
        tokenizer_hash=digest,
        n_texts=len(texts),
        n_tokens=int(offsets[-1]),
    )
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(manifest.model_dump_json(indent=2))
    os.replace(tmp, folder / "manifest.json")
    log.info("token cache %s: %d texts, %d tokens", key, len(texts), manifest.n_tokens)
    opened = open_token_cache(folder)
    assert opened is not None
    return opened


def _atomic_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


# -- model rows cut from the cache -----------------------------------------------------


@dataclass
class Rows:
    """Model rows (windows) of some texts, as `tokenize_batch` cuts them: row r reads
    `n_context[r]` attention-only tokens then `n_valid[r]` tokens of text `text[r]`
    starting at token `start[r]` of that text."""

    text: np.ndarray  # int64 [R]: position in the requested text list
    start: np.ndarray  # int64 [R]
    n_context: np.ndarray  # int64 [R]
    n_valid: np.ndarray  # int64 [R]


def cut_rows(lengths: np.ndarray, room: int, overflow: Overflow, overlap: int) -> Rows:
    """Windows of texts of `lengths` tokens in rows of `room` tokens (after the prefix):
    the first window of a text holds up to `room` tokens, each later one `overlap` tokens
    of left context and up to `room - overlap` new ones; an empty text gets one empty row.
    overflow="truncate": one row per text, its first `room` tokens."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if overflow == "truncate":
        n = len(lengths)
        zeros = np.zeros(n, dtype=np.int64)
        return Rows(np.arange(n, dtype=np.int64), zeros, zeros.copy(), np.minimum(lengths, room))
    step = room - overlap
    extra = np.maximum(lengths - room, 0)
    n_rows = 1 + (extra + step - 1) // step
    text = np.repeat(np.arange(len(lengths), dtype=np.int64), n_rows)
    first = np.cumsum(n_rows) - n_rows
    index = np.arange(len(text), dtype=np.int64) - first[text]  # window number in its text
    start = np.where(index == 0, 0, room + (index - 1) * step)
    n_context = np.where(index == 0, 0, overlap)
    n_valid = np.minimum(lengths[text] - start, np.where(index == 0, room, step))
    return Rows(text, start, n_context, np.maximum(n_valid, 0))


def token_batch(
    cache: TokenCache,
    texts: np.ndarray,
    context_length: int,
    overflow: Overflow,
    window_overlap: int,
    prefix_ids: Sequence[int],
    pad_id: int,
) -> TokenBatch:
    """The padded batch `tokenize_batch(..., with_spans=False)` gives for the texts with
    corpus indices `texts`, cut from the cache by array slicing (no tokenizer call).
    `row_text` indexes into `texts`."""
    prefix = np.asarray(list(prefix_ids), dtype=np.int64)
    room = context_length - len(prefix)
    if room <= window_overlap:
        raise ValueError(
            f"context_length={context_length} leaves no room for tokens after "
            f"{len(prefix)} special token(s) and window_overlap={window_overlap}"
        )
    texts = np.asarray(texts, dtype=np.int64)
    rows = cut_rows(cache.text_lengths(texts), room, overflow, window_overlap)
    n_read = rows.n_context + rows.n_valid
    width = max(int(n_read.max(initial=0)) + len(prefix), 1)
    col = np.arange(width - len(prefix), dtype=np.int64)
    inside = col[None, :] < n_read[:, None]
    begin = cache.text_offsets[texts][rows.text] + rows.start - rows.n_context
    at = np.where(inside, begin[:, None] + col, 0)  # index 0 stands in under padding
    ids = np.where(inside, np.asarray(cache.token_ids)[at] if cache.n_tokens else 0, pad_id)
    input_ids = np.concatenate([np.broadcast_to(prefix, (len(begin), len(prefix))), ids], axis=1)
    attention = np.concatenate([np.ones((len(begin), len(prefix)), dtype=bool), inside], axis=1)
    valid = np.zeros_like(attention)
    valid[:, len(prefix) :] = inside & (col[None, :] >= rows.n_context[:, None])
    return TokenBatch(
        input_ids_BT=torch.from_numpy(input_ids.astype(np.int64)),
        attention_mask_BT=torch.from_numpy(attention.astype(np.int64)),
        valid_BT=torch.from_numpy(valid),
        row_text=rows.text.tolist(),
        row_token_start=rows.start.tolist(),
        spans=[[] for _ in range(len(texts))],
    )


def prefix_and_pad(tokenizer: Any, prefix_ids: Sequence[int] | None) -> tuple[list[int], int]:
    """The prefix `tokenize_batch` puts before rows, and its padding id."""
    prefix = special_prefix_ids(tokenizer) if prefix_ids is None else list(prefix_ids)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return prefix, int(pad_id)
