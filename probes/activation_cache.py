"""One hookpoint's activations over a corpus, read from the model once and kept on disk.

SAE training, `sae eval` and the evidence pass of any SAE at that hookpoint read this
cache instead of running the model again. It stores every token of the corpus' token
cache in corpus order (float16 or bfloat16: 2 bytes a value), in one memory-mapped file.
The model reads it in chunks of consecutive texts, the way the evidence pass reads the
model, with the same batching: so the activations an evidence pass reads from the model
(rounded to the cache's dtype) and those it reads from the cache are the same bytes.

The cache is keyed by everything that decides its values (model, dtype, hookpoint,
corpus and tokenizer through the token cache, context length, windows, prefix,
batching, storage dtype). A build records each finished chunk, so an interrupted build
resumes at its first unfinished chunk. A size bound (bytes) limits it to the first
texts that fit; it says what it will use before it starts.

Files: `acts.bin` (raw 2-byte values [n_tokens, d_model]), `done.npy` (bool per chunk)
and `manifest.json` (what it holds; written before the first chunk).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel

from errors import UserError
from probes.reader import ActivationReader
from probes.token_cache import TokenCache

log = logging.getLogger(__name__)

ACTIVATION_CACHE_VERSION = 1
TEXTS_PER_CHUNK = 256  # as the evidence pass reads the model on a CPU
CacheDtype = Literal["float16", "bfloat16"]
_TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class ActivationCacheError(UserError):
    """An activation cache cannot be built or read; the message says why and what to do."""


class ActivationCacheManifest(BaseModel):
    version: int = ACTIVATION_CACHE_VERSION
    key: str
    source: dict[str, str]  # what was read: model, hookpoint, windows, batching
    tokens_key: str  # the token cache (corpus + tokenizer)
    dtype: CacheDtype
    d_model: int
    texts_per_chunk: int
    n_texts: int  # the first n_texts of the corpus (all of it unless the size bound cut it)
    n_tokens: int
    corpus_texts: int
    corpus_tokens: int


def round_to(acts: torch.Tensor, dtype: CacheDtype) -> torch.Tensor:
    """Activations as the cache keeps them: rounded to `dtype`, back in float32."""
    return acts.to(_TORCH_DTYPES[dtype]).float()


def reader_source(reader: ActivationReader, model_path: str, model_dtype: str) -> dict[str, str]:
    """What decides the activations a reader gives (part of the cache key)."""
    subject = reader.subject
    return {
        "model": subject.name,
        "model_path": model_path,
        "model_dtype": model_dtype,
        "hookpoints": ",".join(reader.hookpoints),
        "prefix_ids": json.dumps(list(subject.prefix_ids or [])),
        "context_length": str(reader.context_length),
        "overflow": reader.overflow,
        "window_overlap": str(reader.window_overlap),
        "batch_size": str(reader.batch_size),
        "max_batch_tokens": str(reader.max_batch_tokens),
    }


@dataclass
class ActivationCache:
    """An opened, complete cache (read-only, memory-mapped)."""

    folder: Path
    manifest: ActivationCacheManifest
    acts: torch.Tensor  # [n_tokens, d_model] in the cache's dtype, memory-mapped

    @property
    def n_tokens(self) -> int:
        return self.manifest.n_tokens

    @property
    def n_texts(self) -> int:
        return self.manifest.n_texts

    def tokens(self, begin: int, end: int) -> torch.Tensor:
        """Activations of corpus tokens [begin, end) as float32 [end - begin, d_model]."""
        if not 0 <= begin <= end <= self.n_tokens:
            raise ActivationCacheError(
                f"tokens [{begin}, {end}) are outside the cache's {self.n_tokens} tokens"
            )
        return self.acts[begin:end].float()


def cache_key(source: dict[str, str], tokens_key: str, dtype: str, texts_per_chunk: int) -> str:
    blob = json.dumps(
        {
            "v": ACTIVATION_CACHE_VERSION,
            "source": source,
            "tokens": tokens_key,
            "dtype": dtype,
            "chunk": texts_per_chunk,
        },
        sort_keys=True,
    )
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def covered_texts(tokens: TokenCache, d_model: int, max_bytes: int | None) -> int:
    """How many texts (from the first) fit under `max_bytes` at 2 bytes a value."""
    if max_bytes is None:
        return tokens.n_texts
    fits = max_bytes // (2 * d_model)
    return int(np.searchsorted(tokens.text_offsets, fits, side="right")) - 1


def _raw(folder: Path, manifest: ActivationCacheManifest, mode: Literal["c", "r+"]) -> np.ndarray:
    """The values as 2-byte integers [n_tokens, d_model] (memory-mapped when any)."""
    if manifest.n_tokens == 0:
        return np.zeros((0, manifest.d_model), dtype=np.int16)
    return np.memmap(
        folder / "acts.bin", dtype=np.int16, mode=mode, shape=(manifest.n_tokens, manifest.d_model)
    )


def _read_manifest(folder: Path) -> ActivationCacheManifest | None:
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = ActivationCacheManifest.model_validate_json(path.read_text())
    except ValueError as error:
        raise ActivationCacheError(
            f"{path} is not an activation cache manifest ({error}); delete {folder}"
        ) from error
    return manifest if manifest.version == ACTIVATION_CACHE_VERSION else None


def open_activation_cache(folder: Path) -> ActivationCache | None:
    """The complete cache in `folder`, or None when it is absent or unfinished."""
    manifest = _read_manifest(folder)
    if manifest is None or not (folder / "done.npy").is_file():
        return None
    if not np.load(folder / "done.npy").all():
        return None
    raw = _raw(folder, manifest, "c")  # copy-on-write: writable for torch, file untouched
    return ActivationCache(
        folder, manifest, torch.from_numpy(raw).view(_TORCH_DTYPES[manifest.dtype])
    )


@dataclass
class CachePlan:
    """What a build will store, said before it starts."""

    folder: Path
    key: str
    n_texts: int
    n_tokens: int
    corpus_texts: int
    corpus_tokens: int
    bytes: int
    done: bool
    # what the key was made of, so the build stores exactly what the plan names
    source: dict[str, str]
    dtype: CacheDtype
    texts_per_chunk: int


def plan_cache(
    root: Path,
    reader: ActivationReader,
    tokens: TokenCache,
    source: dict[str, str],
    dtype: CacheDtype = "float16",
    max_bytes: int | None = None,
    texts_per_chunk: int = TEXTS_PER_CHUNK,
) -> CachePlan:
    if len(reader.hookpoints) != 1:
        raise ActivationCacheError("an activation cache holds exactly one hookpoint")
    key = cache_key(source, tokens.key, dtype, texts_per_chunk)
    d_model = reader.subject.d_model
    n_texts = covered_texts(tokens, d_model, max_bytes)
    n_tokens = int(tokens.text_offsets[n_texts])
    folder = root / key
    return CachePlan(
        folder=folder,
        key=key,
        n_texts=n_texts,
        n_tokens=n_tokens,
        corpus_texts=tokens.n_texts,
        corpus_tokens=tokens.n_tokens,
        bytes=2 * d_model * n_tokens,
        done=open_activation_cache(folder) is not None,
        source=source,
        dtype=dtype,
        texts_per_chunk=texts_per_chunk,
    )


def build_activation_cache(
    plan: CachePlan,
    reader: ActivationReader,
    tokens: TokenCache,
    on_tokens: Callable[[int], None] | None = None,
) -> ActivationCache:
    """Build (or resume, or reuse) the cache `plan` describes. `on_tokens(n)` is called
    after each chunk with the tokens it added (progress; resumed chunks count at once)."""
    dtype, texts_per_chunk = plan.dtype, plan.texts_per_chunk
    opened = open_activation_cache(plan.folder)
    if opened is not None:
        return opened
    if plan.n_texts == 0:
        raise ActivationCacheError(
            f"the size bound leaves no room for the corpus' first text; raise it (one token "
            f"takes {2 * reader.subject.d_model} bytes)"
        )
    manifest = ActivationCacheManifest(
        key=plan.key,
        source=plan.source,
        tokens_key=tokens.key,
        dtype=dtype,
        d_model=reader.subject.d_model,
        texts_per_chunk=texts_per_chunk,
        n_texts=plan.n_texts,
        n_tokens=plan.n_tokens,
        corpus_texts=tokens.n_texts,
        corpus_tokens=tokens.n_tokens,
    )
    folder = plan.folder
    n_chunks = -(-plan.n_texts // texts_per_chunk)
    done = _resumable(folder, manifest, n_chunks)
    raw = _raw(folder, manifest, "r+")
    hookpoint = reader.hookpoints[0]
    if on_tokens is not None and done.any():
        resumed = np.flatnonzero(done)
        on_tokens(
            sum(_chunk_tokens(tokens, int(c), texts_per_chunk, plan.n_texts) for c in resumed)
        )
    for chunk in np.flatnonzero(~done):
        first = int(chunk) * texts_per_chunk
        texts = np.arange(first, min(first + texts_per_chunk, plan.n_texts))
        begin, end = int(tokens.text_offsets[texts[0]]), int(tokens.text_offsets[texts[-1] + 1])
        with torch.inference_mode():
            block = reader.read_tokens(reader.cached_batch(tokens, texts), hookpoint)
        stored = block.to(_TORCH_DTYPES[dtype]).cpu()
        if not torch.isfinite(stored).all():
            raise ActivationCacheError(
                f"activations of texts {first}..{texts[-1]} do not fit {dtype} (too large); "
                "use a bfloat16 cache"
            )
        raw[begin:end] = stored.view(torch.int16).numpy()
        if isinstance(raw, np.memmap):
            raw.flush()  # the values are on disk before the chunk is marked done
        done[chunk] = True
        _save_done(folder, done)
        if on_tokens is not None:
            on_tokens(end - begin)
    del raw
    opened = open_activation_cache(folder)
    assert opened is not None
    log.info("activation cache %s: %d tokens of %d texts", plan.key, plan.n_tokens, plan.n_texts)
    return opened


def _chunk_tokens(tokens: TokenCache, chunk: int, per_chunk: int, n_texts: int) -> int:
    first, last = chunk * per_chunk, min((chunk + 1) * per_chunk, n_texts)
    return int(tokens.text_offsets[last] - tokens.text_offsets[first])


def _resumable(folder: Path, manifest: ActivationCacheManifest, n_chunks: int) -> np.ndarray:
    """The done-flags of an unfinished build of the same cache, else a fresh build's."""
    old = _read_manifest(folder)
    if old == manifest and (folder / "done.npy").is_file() and (folder / "acts.bin").is_file():
        done = np.load(folder / "done.npy")
        if len(done) == n_chunks:
            log.info(
                "resuming activation cache %s at %d of %d chunks",
                manifest.key,
                done.sum(),
                n_chunks,
            )
            return done
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.json", "done.npy", "acts.bin"):
        (folder / name).unlink(missing_ok=True)
    with open(folder / "acts.bin", "wb") as f:
        f.truncate(2 * manifest.d_model * manifest.n_tokens)  # sparse until written
    done = np.zeros(n_chunks, dtype=bool)
    _save_done(folder, done)
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(manifest.model_dump_json(indent=2))
    os.replace(tmp, folder / "manifest.json")
    return done


def _save_done(folder: Path, done: np.ndarray) -> None:
    tmp = folder / "done.npy.tmp"
    with open(tmp, "wb") as f:
        np.save(f, done)
    os.replace(tmp, folder / "done.npy")
