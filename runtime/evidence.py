"""Settings -> an evidence pass: which model, SAE (or planted features) and corpus, where
the files go, and how to find the evidence of the current configuration again.

Evidence lives in `<data dir>/evidence/<evidence id>/`; the id is a hash of the source
(model, SAE file contents, hookpoint, ...), the corpus texts and the config, so a rerun
with the same inputs finds the finished folder and reuses it. `latest.json` maps each
source (without corpus and config) to the id of its most recent build, which is what
`glossator feature N` and the agent read by default. Models, SAEs and tokenizers inside
the data dir are recorded relative to it, so a data dir moved or mounted elsewhere keeps
its evidence; builds that recorded absolute paths are still found (in place by those
paths, moved by the content hashes of their SAE or planted spec).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probes.evidence.build import build_evidence
from probes.evidence.config import (
    PATH_FIELDS,
    EvidenceConfig,
    EvidenceError,
    EvidenceManifest,
    OutputSide,
    read_manifest,
    recorded_file,
    recorded_path,
)
from probes.evidence.sources import ChunkReader
from runtime import loaders
from runtime.caches import texts_per_chunk
from runtime.settings import Settings
from sae.formats import dtype_name

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
    from runtime.caches import cached_activations, corpus_tokens, pass_reader, texts_per_read

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
        SAEChunkReader(reader, sae, tokens, texts_per_read=texts_per_read(str(subject.device)))
        if cache is None
        else CachedChunkReader(cache, tokens, reader, sae)
    )
    source = {
        "kind": "sae",
        "model": subject.name,
        "model_path": recorded_path(loaders.subject_model_path(settings), settings.data_dir),
        "prefix_ids": json.dumps(list(subject.prefix_ids)),
        "dtype": dtype_name(subject.dtype),  # resolved: "auto" varies
        "sae_path": recorded_path(loaders.sae_path(settings), settings.data_dir),
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
        "tokenizer": recorded_path(loaders.subject_model_path(settings), settings.data_dir),
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
    from probes.evidence.config import corpus_hash

    corpus = corpus_hash(job.texts)
    source, key = _same_build(settings, job.source, corpus, config)
    folder = evidence_root(settings) / key
    reused = read_manifest(folder) is not None
    manifest = build_evidence(
        job.reader,
        job.texts,
        folder,
        source,
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


def _same_build(
    settings: Settings, source: dict[str, str], corpus: str, config: EvidenceConfig
) -> tuple[dict[str, str], str]:
    """The source and key to build under: `source`'s own, unless a finished build of the
    same corpus and config records the same source another way (absolute paths, written
    before relative ones, in place or since moved): that one is reused as it is."""
    from probes.evidence.config import evidence_id

    key = evidence_id(source, corpus, config)
    root = evidence_root(settings)
    if read_manifest(root / key) is None:
        for other in sorted(root.glob("*/manifest.json")):
            manifest = _manifest_or_none(other.parent)
            if (
                manifest is not None
                and (manifest.corpus_hash, manifest.config) == (corpus, config)
                and same_source(manifest.source, source)
                # built when ids were hashed otherwise (an older glossator): not reusable
                and manifest.evidence_id == evidence_id(manifest.source, corpus, config)
            ):
                return manifest.source, other.parent.name
    return source, key


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
    """The most recent evidence folder of the configured SAE (or of planted features):
    by the paths its source records (relative to the data dir, or absolute as older
    builds recorded them), else by content hash (an older build in a data dir that has
    moved since)."""
    path = evidence_root(settings) / "latest.json"
    latest: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if use_planted:
        key = _latest_planted(settings, latest, planted_spec_path(planted))
        how = "glossator evidence build --planted"
    else:
        key = _latest_sae(settings, latest)
        how = "glossator evidence build"
    if key is None:
        raise EvidenceError(f"no evidence built for this source yet; run `{how}` first")
    return evidence_root(settings) / key


def _latest_planted(settings: Settings, latest: dict[str, str], spec: Path) -> str | None:
    model = loaders.subject_model_path(settings)
    tokenizer = recorded_path(model, settings.data_dir)
    for slug in (f"planted:{spec}@{tokenizer}", f"planted:{spec}@{model}"):
        if slug in latest:
            return latest[slug]
    if not spec.is_file():
        return None
    spec_hash = fingerprint(spec)
    same = [
        key
        for key, source in _latest_sources(settings, latest)
        if source.get("kind") == PLANTED
        and source.get("spec_hash") == spec_hash
        and _same_path(source.get("tokenizer", ""), tokenizer)
    ]
    return _newest(settings, same)


def _latest_sae(settings: Settings, latest: dict[str, str]) -> str | None:
    sae_dir = loaders.sae_path(settings)
    by_hookpoint: dict[str, str] = {}
    for prefix in (f"sae:{sae_dir}@", f"sae:{recorded_path(sae_dir, settings.data_dir)}@"):
        for slug, key in latest.items():  # the current slug last: it wins over an older one
            if slug.startswith(prefix):
                by_hookpoint[slug.removeprefix(prefix)] = key
    if not by_hookpoint and sae_dir.exists():
        sae_hash = fingerprint(sae_dir)
        for key, source in _latest_sources(settings, latest):
            if source.get("kind") == "sae" and source.get("sae_hash") == sae_hash:
                by_hookpoint[source.get("hookpoint", "")] = key
    if len(by_hookpoint) > 1:
        raise EvidenceError(
            f"several hookpoints have evidence for the SAE at {sae_dir}; pass --evidence"
        )
    return next(iter(by_hookpoint.values()), None)


def _latest_sources(
    settings: Settings, latest: dict[str, str]
) -> Iterator[tuple[str, dict[str, str]]]:
    """Each build `latest.json` names, with the source its manifest records."""
    for key in dict.fromkeys(latest.values()):
        manifest = _manifest_or_none(evidence_root(settings) / key)
        if manifest is not None:
            yield key, manifest.source


def _manifest_or_none(folder: Path) -> EvidenceManifest | None:
    """A folder's manifest; None when it has none or a broken one (another build's
    broken manifest must not hide this one)."""
    try:
        return read_manifest(folder)
    except EvidenceError:
        return None


def _newest(settings: Settings, keys: list[str]) -> str | None:
    """The most recently finished of these builds."""
    if not keys:
        return None
    return max(keys, key=lambda k: (evidence_root(settings) / k / "manifest.json").stat().st_mtime)


def same_source(recorded: dict[str, str], current: dict[str, str]) -> bool:
    """Whether a build's recorded source is `current`, its paths perhaps recorded the
    way older versions did (see `_same_path`)."""
    return recorded.keys() == current.keys() and all(
        _same_path(recorded[field], value) if field in PATH_FIELDS else recorded[field] == value
        for field, value in current.items()
    )


def _same_path(recorded: str, current: str) -> bool:
    """Whether a path a build recorded names `current` (as this version records it): the
    same, or an absolute one from before relative paths that ends in the same folders."""
    here = Path(current)
    if here.is_absolute():
        return recorded == current
    return Path(recorded).parts[-len(here.parts) :] == here.parts


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
    if recorded and recorded_file(recorded, settings.data_dir).exists():
        return EvidenceStore(folder, load_tokenizer(recorded_file(recorded, settings.data_dir)))
    return EvidenceStore(folder, loaders.open_tokenizer(settings))
