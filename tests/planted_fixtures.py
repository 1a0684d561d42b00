"""Planted-feature evidence over a sample of the real default corpus, shared by the
agent tests (built once per session: about half a minute)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from probes.default_corpus import build_default_corpus, load_default_corpus
from probes.evidence.build import build_evidence
from probes.evidence.sources import SourceChunkReader
from probes.evidence.store import EvidenceStore
from probes.planted import PlantedFeatures, default_spec_path


@pytest.fixture(scope="session")
def planted_evidence(
    tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any
) -> tuple[EvidenceStore, PlantedFeatures]:
    corpus_dir = tmp_path_factory.mktemp("default-corpus")
    build_default_corpus(corpus_dir, progress=False)
    corpus = load_default_corpus(corpus_dir, progress=False)
    texts = corpus.train + corpus.heldout
    random.Random(0).shuffle(texts)
    planted = PlantedFeatures.from_file(default_spec_path(), smollm2_tokenizer)
    folder = tmp_path_factory.mktemp("planted-evidence")
    reader = SourceChunkReader(planted, smollm2_tokenizer)
    build_evidence(reader, texts[:12_000], folder, {"kind": "planted"})
    return EvidenceStore(folder, smollm2_tokenizer), planted
