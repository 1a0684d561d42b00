"""Settings -> an evidence pass: which model, SAE (or planted features) and corpus, where
the files go, and how to find the evidence of the current configuration again.

Evidence lives in `<data dir>/evidence/<evidence id>/`; the id is a hash of the source
(model, SAE file contents, hookpoint, ...), the corpus texts and the config, so a rerun
with the same inputs finds the finished folder and reuses it. `latest.json` maps each
source (without corpus and config) to the id of its most recent build, which is what
`glossator feature N` and the agent read by default.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probes.evidence.build import build_evidence
from probes.evidence.config import EvidenceConfig, EvidenceError, EvidenceManifest, OutputSide
from probes.evidence.sources import ChunkReader
from runtime import loaders
from runtime.caches import texts_per_chunk
from runtime.settings import Settings

if TYPE_CHECKING:
    from probes.evidence.store import EvidenceStore
    from probes.model import SubjectModel
    from sae.base import SparseAutoencoder

PLANTED = "planted"
_ORDER_SEED = 0  # corpus order for the pass: a --max-tokens prefix mixes all sources


@dataclass
class EvidenceJob:
    """Everything one evidence pass needs, resolved from the settings."""

    reader: ChunkReader
    texts: list[str]
    source: dict[str, str]
    device: str
    output_side: Callable[[EvidenceConfig], OutputSide | None] | None
    tokenizer: Any
    read_from: str = "model"  # or "activation cache <folder>"
    n_tokens: int | None = None  # the corpus' tokens, when known from its token cache


def evidence_root(settings: Settings) -> Path:
    return settings.data_dir / "evidence"


def fingerprint(path: Path) -> str:
    """A hash of a file, or of every file in a folder (names and contents)."""
    digest = hashlib.blake2b(digest_size=16)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def corpus_texts(settings: Settings, corpus: Path | None, tokenizer: Any = None) -> list[str]:
    """The texts of `corpus` (any layout `read_corpus` takes), else of the default corpus
    (train and held-out), in a seeded shuffled order."""
    from probes.corpus import read_corpus
    from probes.default_corpus import load_default_corpus

    if corpus is not None:
        texts = read_corpus(corpus)
    else:
        tokenizer = tokenizer or loaders.open_tokenizer(settings)
        loaded = load_default_corpus(loaders.default_corpus_dir(settings), tokenizer)
        texts = loaded.train + loaded.heldout
    if not texts:
        raise EvidenceError(f"the corpus {corpus} has no texts")
    random.Random(_ORDER_SEED).shuffle(texts)
    return texts


def sae_job(
    settings: Settings,
    corpus: Path | None,
    hookpoint: str | None,
    batch_size: int | None = None,
    batch_tokens: int | None = None,
    loaded: tuple[SubjectModel, SparseAutoencoder] | None = None,
) -> EvidenceJob:
    """Model + SAE from the settings (GLOSSATOR_MODEL / GLOSSATOR_SAE or the defaults);
    `loaded`: the ones this process already opened from the same settings (not twice in
    memory)."""
    from probes.evidence.output_side import model_logit_lens, similar_features
    from probes.evidence.sources import CachedChunkReader, SAEChunkReader
    from runtime.caches import cached_activations, corpus_tokens, pass_reader

    if loaded is None:
        subject = loaders.open_subject_model(settings)
        loaded = subject, loaders.open_sae(settings, subject)
    subject, sae = loaded
    name = loaders.sae_hookpoint(settings, sae, hookpoint)
    reader = pass_reader(settings, subject, name, batch_size, batch_tokens)
    texts = corpus_texts(settings, corpus, subject.tokenizer)
    tokens = corpus_tokens(settings, texts, subject.tokenizer)
    cache = cached_activations(settings, reader, tokens)
    chunks: ChunkReader = (
        SAEChunkReader(reader, sae, tokens=tokens)
        if cache is None
        else CachedChunkReader(cache, tokens, reader, sae)
    )
    source = {
        "kind": "sae",
        "model": subject.name,
        "model_path": str(loaders.subject_model_path(settings)),
        "prefix_ids": json.dumps(list(subject.prefix_ids)),
        "dtype": settings.dtype,
        "sae_path": str(loaders.sae_path(settings)),
        "sae_hash": fingerprint(loaders.sae_path(settings)),
        "hookpoint": name,
        "context_length": str(settings.context_length),
        "activations": "float16",  # rounded as the activation cache keeps them
    }

    def output_side(config: EvidenceConfig) -> OutputSide:
        lens = model_logit_lens(sae.W_dec.detach(), subject.model, n=config.logit_lens_n)
        n_similar = min(config.similar_n, sae.d_sae - 1)
        ids, cos = similar_features(sae.W_dec.detach(), n=max(n_similar, 1))
        return OutputSide(lens, ids, cos)

    return EvidenceJob(
        reader=chunks,
        texts=texts,
        source=source,
        device=str(sae.device),
        output_side=output_side if sae.d_sae > 1 else None,
        tokenizer=subject.tokenizer,
        read_from="model" if cache is None else f"activation cache {cache.folder}",
        n_tokens=tokens.n_tokens,
    )


def planted_spec_path(spec: Path | None) -> Path:
    """The spec file, absolute (it names the evidence's source), default: the shipped one."""
    from probes.planted import default_spec_path

    return (spec or default_spec_path()).expanduser().resolve()


def planted_job(settings: Settings, corpus: Path | None, spec: Path | None) -> EvidenceJob:
    """Planted (ground-truth) features from `spec` (default: the shipped ones)."""
    from probes.evidence.sources import SourceChunkReader
    from probes.planted import PlantedFeatures, load_planted_spec

    spec_path = planted_spec_path(spec)
    tokenizer = loaders.open_tokenizer(settings)
    planted = PlantedFeatures(load_planted_spec(spec_path), tokenizer)
    source = {
        "kind": PLANTED,
        "spec_path": str(spec_path),
        "spec_hash": fingerprint(spec_path),
        "tokenizer": str(loaders.subject_model_path(settings)),
    }
    return EvidenceJob(
        reader=SourceChunkReader(planted, tokenizer),
        texts=corpus_texts(settings, corpus, tokenizer),
        source=source,
        device="cpu",
        output_side=None,
        tokenizer=tokenizer,
    )


def source_slug(source: dict[str, str]) -> str:
    """What a build is of, without the corpus and config: the key of `latest.json`."""
    if source["kind"] == PLANTED:
        return f"planted:{source['spec_path']}@{source['tokenizer']}"
    return f"sae:{source['sae_path']}@{source['hookpoint']}"


def run_job(
    settings: Settings,
    job: EvidenceJob,
    config: EvidenceConfig,
    on_chunk: Callable[[int, int], None] | None = None,
    checkpoint_seconds: float = 60.0,
    record_latest: bool = True,
) -> tuple[EvidenceManifest, Path, bool]:
    """Build (or reuse) the job's evidence and record it as the latest for its source
    (unless `record_latest` is False: a score-only corpus must not become what
    `glossator explain` reads). Returns the manifest, the folder, and whether a finished
    build was reused."""
    from probes.evidence.config import corpus_hash, evidence_id, read_manifest

    key = evidence_id(job.source, corpus_hash(job.texts), config)
    folder = evidence_root(settings) / key
    reused = read_manifest(folder) is not None
    manifest = build_evidence(
        job.reader,
        job.texts,
        folder,
        job.source,
        config,
        device=job.device,
        output_side=job.output_side,
        on_chunk=on_chunk,
        texts_per_chunk=texts_per_chunk(job.device),
        checkpoint_seconds=checkpoint_seconds,
    )
    if record_latest:
        _record_latest(settings, source_slug(job.source), key)
    return manifest, folder, reused


def _record_latest(settings: Settings, slug: str, key: str) -> None:
    path = evidence_root(settings) / "latest.json"
    latest = json.loads(path.read_text()) if path.exists() else {}
    latest[slug] = key
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(latest, indent=2, sort_keys=True))
    os.replace(tmp, path)


def latest_folder(
    settings: Settings, planted: Path | None = None, use_planted: bool = False
) -> Path:
    """The most recent evidence folder of the configured SAE (or of planted features)."""
    path = evidence_root(settings) / "latest.json"
    latest = json.loads(path.read_text()) if path.exists() else {}
    if use_planted:
        spec = planted_spec_path(planted)
        tokenizer = loaders.subject_model_path(settings)
        slug = f"planted:{spec}@{tokenizer}"
        how = "glossator evidence build --planted"
    else:
        sae_dir = loaders.sae_path(settings)
        matches = [k for k in latest if k.startswith(f"sae:{sae_dir}@")]
        slug = matches[0] if len(matches) == 1 else ""
        how = "glossator evidence build"
        if len(matches) > 1:
            raise EvidenceError(
                f"several hookpoints have evidence for the SAE at {sae_dir}; pass --evidence"
            )
    if slug not in latest:
        raise EvidenceError(f"no evidence built for this source yet; run `{how}` first")
    return evidence_root(settings) / latest[slug]


def evidence_folder(
    settings: Settings, evidence_id: str | None, spec: Path | None, use_planted: bool
) -> Path:
    """The folder of `evidence_id`, else the latest build of the configured SAE (or of
    the planted spec)."""
    if evidence_id is None:
        return latest_folder(settings, spec, use_planted)
    root = evidence_root(settings)
    folder = root / evidence_id
    if Path(evidence_id).name != evidence_id or not (folder / "manifest.json").is_file():
        known = sorted(p.parent.name for p in root.glob("*/manifest.json"))
        listing = ", ".join(known) if known else "none yet: run `glossator evidence build`"
        raise EvidenceError(f"no finished evidence {evidence_id!r} in {root}; known: {listing}")
    return folder


def open_store(settings: Settings, folder: Path) -> EvidenceStore:
    """A finished evidence folder, decoded with the tokenizer it was built with (else the
    configured model's): what the agent and scorers read evidence from."""
    from probes.evidence.config import read_manifest
    from probes.evidence.store import EvidenceStore
    from probes.model import load_tokenizer

    manifest = read_manifest(folder)
    source = manifest.source if manifest is not None else {}
    recorded = source.get("model_path") or source.get("tokenizer")
    if recorded and Path(recorded).exists():
        return EvidenceStore(folder, load_tokenizer(recorded))
    return EvidenceStore(folder, loaders.open_tokenizer(settings))
