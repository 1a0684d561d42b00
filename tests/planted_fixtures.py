"""Planted-feature evidence over a sample of the real default corpus, shared by the
agent tests (built once per session: about half a minute)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from probes.default_corpus import build_default_corpus, load_default_corpus
from probes.evidence.build import build_evidence
from probes.evidence.sources import SourceChunkReader
from probes.evidence.store import EvidenceStore
from probes.planted import PlantedFeatures, concept_spec_path, default_spec_path


@pytest.fixture(scope="session")
def default_corpus_sample(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """12,000 texts of the real default corpus in a seeded order."""
    corpus_dir = tmp_path_factory.mktemp("default-corpus")
    build_default_corpus(corpus_dir, progress=False)
    corpus = load_default_corpus(corpus_dir, progress=False)
    texts = corpus.train + corpus.heldout
    random.Random(0).shuffle(texts)
    return texts[:12_000]


def _planted_store(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: Any, spec: Path, texts: list[str]
) -> tuple[EvidenceStore, PlantedFeatures]:
    planted = PlantedFeatures.from_file(spec, tokenizer)
    folder = tmp_path_factory.mktemp(f"planted-evidence-{spec.stem}")
    build_evidence(SourceChunkReader(planted, tokenizer), texts, folder, {"kind": "planted"})
    return EvidenceStore(folder, tokenizer), planted


@pytest.fixture(scope="session")
def planted_evidence(
    tmp_path_factory: pytest.TempPathFactory,
    smollm2_tokenizer: Any,
    default_corpus_sample: list[str],
) -> tuple[EvidenceStore, PlantedFeatures]:
    return _planted_store(
        tmp_path_factory, smollm2_tokenizer, default_spec_path(), default_corpus_sample
    )


@pytest.fixture(scope="session")
def concept_evidence(
    tmp_path_factory: pytest.TempPathFactory,
    smollm2_tokenizer: Any,
    default_corpus_sample: list[str],
) -> tuple[EvidenceStore, PlantedFeatures]:
    """The planted concept features (whole WordNet classes) on the same texts."""
    return _planted_store(
        tmp_path_factory, smollm2_tokenizer, concept_spec_path(), default_corpus_sample
    )
