"""Where the corpus caches live and which one a job reads.

`<data dir>/cache/tokens/<key>/`: token caches (a corpus tokenized once);
`<data dir>/cache/activations/<key>/`: activation caches (one hookpoint over a corpus).
Both are keyed by what decides their contents, so a changed corpus, tokenizer, model or
hookpoint gets a new cache and never reads a stale one. The activation cache is read
with the evidence pass' own reader settings, so an evidence pass finds it by building
the same key, and its results from the cache equal those from the model.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probes.activation_cache import (
    ActivationCache,
    CachePlan,
    open_activation_cache,
    plan_cache,
    reader_source,
)
from probes.model import SubjectModel
from probes.reader import ActivationReader
from probes.token_cache import TokenCache, token_cache
from runtime import loaders
from runtime.settings import Settings
from sae.formats import dtype_name

GIB = 1 << 30


def caches_root(settings: Settings) -> Path:
    return settings.data_dir / "cache"


def corpus_tokens(
    settings: Settings,
    texts: Sequence[str],
    tokenizer: Any,
    on_texts: Callable[[int], None] | None = None,
) -> TokenCache:
    """The token cache of `texts` (built in seconds when absent)."""
    return token_cache(caches_root(settings) / "tokens", texts, tokenizer, on_texts=on_texts)


def texts_per_chunk(device: str) -> int:
    """Texts per accumulator update and checkpoint unit: ~57k default-corpus tokens on a
    CPU (~15 s of model reading, ~130 MB of float32 activations from the activation
    cache); on a GPU far more. An update re-ranks the kept contexts of every feature it
    touches, so fewer, larger updates are cheaper: on 2 cores, 1,024 texts a chunk
    instead of 256 halve the updates' share of a cached evidence pass."""
    return 4096 if device.startswith("cuda") else 1024


def texts_per_read(device: str) -> int:
    """Texts the model reads together (their rows are length-sorted into batches among
    themselves): the activation cache's chunk, and the evidence pass reads the model in
    runs of this many too, so that both see the same bfloat16 rounding."""
    return 4096 if device.startswith("cuda") else 256


def default_batching(device: str) -> tuple[int, int]:
    """(rows, padded tokens) per forward: ~4k tokens on CPU (fastest per token on 2
    cores), far more on a GPU."""
    return (512, 131_072) if device.startswith("cuda") else (64, 4096)


def pass_reader(
    settings: Settings,
    subject: SubjectModel,
    hookpoint: str,
    batch_size: int | None = None,
    batch_tokens: int | None = None,
) -> ActivationReader:
    """The reader of an evidence pass (and of the activation cache it reads)."""
    rows, tokens = default_batching(str(subject.device))
    return ActivationReader(
        subject,
        [hookpoint],
        context_length=settings.context_length,
        overflow=settings.overflow,
        batch_size=batch_size or rows,
        max_batch_tokens=batch_tokens or tokens,
    )


def _source(settings: Settings, reader: ActivationReader) -> dict[str, str]:
    # The dtype the model runs in, not the setting: "auto" differs between machines.
    dtype = dtype_name(reader.subject.dtype)
    return reader_source(reader, str(loaders.subject_model_path(settings)), dtype)


def activation_plan(
    settings: Settings, reader: ActivationReader, tokens: TokenCache, max_gb: float | None = None
) -> CachePlan:
    """What the activation cache of `reader` over `tokens` holds (or will hold)."""
    bound = settings.activation_cache_gb if max_gb is None else max_gb
    return plan_cache(
        caches_root(settings) / "activations",
        reader,
        tokens,
        _source(settings, reader),
        max_bytes=int(bound * GIB),
        texts_per_chunk=texts_per_read(str(reader.subject.device)),
    )


def cached_activations(
    settings: Settings, reader: ActivationReader, tokens: TokenCache
) -> ActivationCache | None:
    """The finished activation cache of `reader` over all of `tokens`' texts, if any."""
    plan = plan_cache(
        caches_root(settings) / "activations",
        reader,
        tokens,
        _source(settings, reader),
        texts_per_chunk=texts_per_read(str(reader.subject.device)),
    )
    cache = open_activation_cache(plan.folder)
    return cache if cache is not None and cache.n_texts == tokens.n_texts else None


def split_activations(
    cache: ActivationCache, tokens: TokenCache, texts: Sequence[str], heldout: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cached activations of the tokens of `texts` (the cache's corpus, in its order)
    that are not in `heldout`, and of those that are: (train, held out), each [n, d_model]
    in the cache's dtype, gathered into memory in corpus order."""
    held = set(heldout)
    is_held_X = np.fromiter((t in held for t in texts[: cache.n_texts]), dtype=bool)
    held_N = torch.from_numpy(np.repeat(is_held_X, tokens.text_lengths()[: cache.n_texts]))
    return cache.acts[~held_N], cache.acts[held_N]


def cache_listing(settings: Settings) -> list[dict[str, Any]]:
    """Every cache on disk: kind, key, what it holds and its size in bytes."""
    from probes.activation_cache import ActivationCacheManifest
    from probes.token_cache import TokenCacheManifest

    rows: list[dict[str, Any]] = []
    for kind, manifest_type in (
        ("tokens", TokenCacheManifest),
        ("activations", ActivationCacheManifest),
    ):
        for path in sorted((caches_root(settings) / kind).glob("*/manifest.json")):
            folder = path.parent
            size = sum(p.stat().st_blocks * 512 for p in folder.iterdir() if p.is_file())
            try:
                manifest = manifest_type.model_validate_json(path.read_text())
            except ValueError:
                rows.append(
                    {"kind": kind, "key": folder.name, "bytes": size, "state": "unreadable"}
                )
                continue
            done = kind == "tokens" or open_activation_cache(folder) is not None
            rows.append(
                {
                    "kind": kind,
                    "key": folder.name,
                    "texts": manifest.n_texts,
                    "tokens": manifest.n_tokens,
                    "bytes": size,
                    "state": "complete" if done else "unfinished",
                    "what": _what(manifest.model_dump()),
                }
            )
    return rows


def _what(manifest: dict[str, Any]) -> str:
    source = manifest.get("source")
    if isinstance(source, dict):
        parts = (source.get("model"), source.get("hookpoints"), manifest.get("dtype"))
        return " ".join(map(str, parts)) + f", context {source.get('context_length')}"
    return str(manifest.get("tokenizer", ""))


def remove_caches(settings: Settings) -> int:
    """Delete every cache; the bytes freed."""
    root = caches_root(settings)
    freed = sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())
    shutil.rmtree(root, ignore_errors=True)
    return freed
