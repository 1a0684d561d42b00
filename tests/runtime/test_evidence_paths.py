"""Evidence survives a moved data dir (issue 16, item 10): manifests record the model,
SAE and tokenizer inside the data dir relative to it, so the same data dir mounted
elsewhere finds its evidence and reuses it; builds from before, which recorded absolute
paths, still load and are found, in place by those paths and moved by content hash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from probes.evidence.config import (
    EvidenceConfig,
    EvidenceManifest,
    corpus_hash,
    evidence_id,
    read_manifest,
)
from runtime.evidence import (
    corpus_texts,
    latest_folder,
    open_store,
    planted_job,
    run_job,
    sae_job,
)
from runtime.settings import Settings
from sae.loading import save_sae
from tests.sae_helpers import identity_sae

CONFIG = EvidenceConfig(max_tokens=400)
TEXTS = [
    f"I love the sea, she loved the garden, take {i}. The red computer hums." for i in range(40)
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return path


def planted_settings(data: Path) -> Settings:
    """The tokenizer (all planted features need) lives inside the data dir."""
    return Settings(data_dir=data, model=str(data / "models" / "tok"), device="cpu")


def sae_settings(data: Path) -> Settings:
    """Model and SAE both inside the data dir, as the defaults are."""
    return Settings(
        data_dir=data,
        model=str(data / "models" / "tiny"),
        sae=str(data / "saes" / "identity"),
        hookpoint="layers.1",
        device="cpu",
    )


@pytest.fixture
def planted_data(tmp_path: Path, smollm2_tokenizer: Any) -> Path:
    data = tmp_path / "here" / "data"
    smollm2_tokenizer.save_pretrained(data / "models" / "tok")
    return data


@pytest.fixture
def sae_data(tmp_path: Path, tiny_llama_dir: Path) -> Path:
    data = tmp_path / "here" / "data"
    shutil.copytree(tiny_llama_dir, data / "models" / "tiny")
    save_sae(identity_sae(32), data / "saes" / "identity")  # the tiny model's width
    return data


def moved(data: Path) -> Path:
    """The data dir mounted elsewhere (the old place gone)."""
    target = data.parent.parent / "mounted" / "data"
    target.parent.mkdir()
    data.rename(target)
    return target


def test_planted_evidence_is_found_after_the_data_dir_moves(
    planted_data: Path, corpus: Path
) -> None:
    settings = planted_settings(planted_data)
    manifest, _, reused = run_job(settings, planted_job(settings, corpus, None), CONFIG)
    assert manifest.source["tokenizer"] == "models/tok" and not reused

    there = planted_settings(moved(planted_data))
    folder = latest_folder(there, None, use_planted=True)
    assert folder == there.data_dir / "evidence" / manifest.evidence_id
    assert open_store(there, folder).tokenizer("love")["input_ids"]  # its own tokenizer
    again, folder_again, reused = run_job(there, planted_job(there, corpus, None), CONFIG)
    assert reused and again.evidence_id == manifest.evidence_id and folder_again == folder


def test_sae_evidence_is_found_after_the_data_dir_moves(sae_data: Path, corpus: Path) -> None:
    settings = sae_settings(sae_data)
    manifest, _, _ = run_job(settings, sae_job(settings, corpus, None), CONFIG)
    assert manifest.source["model_path"] == "models/tiny"
    assert manifest.source["sae_path"] == "saes/identity"

    there = sae_settings(moved(sae_data))
    assert latest_folder(there) == there.data_dir / "evidence" / manifest.evidence_id
    again, _, reused = run_job(there, sae_job(there, corpus, None), CONFIG)
    assert reused and again.evidence_id == manifest.evidence_id


def as_older_build(settings: Settings, folder: Path, slug: str, texts: list[str]) -> Path:
    """Rewrite a finished build as versions before relative paths wrote it: absolute
    paths in its source, its key computed from them, latest.json keyed by them."""
    manifest = read_manifest(folder)
    assert manifest is not None
    source = {
        field: str(settings.data_dir / value) if field in ("tokenizer", "model_path", "sae_path")
        else value
        for field, value in manifest.source.items()
    }  # fmt: skip
    key = evidence_id(source, corpus_hash(texts), manifest.config)
    old = folder.rename(folder.parent / key)
    old_manifest = manifest.model_copy(update={"source": source, "evidence_id": key})
    (old / "manifest.json").write_text(old_manifest.model_dump_json())
    (old.parent / "latest.json").write_text(json.dumps({slug: key}))
    return old


def test_an_older_planted_build_with_absolute_paths_is_found_in_place_and_moved(
    planted_data: Path, corpus: Path
) -> None:
    settings = planted_settings(planted_data)
    job = planted_job(settings, corpus, None)
    _, folder, _ = run_job(settings, job, CONFIG)
    texts = corpus_texts(settings, corpus)
    slug = f"planted:{job.source['spec_path']}@{settings.model}"
    old = as_older_build(settings, folder, slug, texts)
    manifest = read_manifest(old)
    assert isinstance(manifest, EvidenceManifest)  # an old manifest still loads
    assert manifest.source["tokenizer"] == settings.model

    assert latest_folder(settings, None, use_planted=True) == old  # in place, by its paths
    there = planted_settings(moved(planted_data))
    moved_old = there.data_dir / "evidence" / old.name
    assert latest_folder(there, None, use_planted=True) == moved_old  # by content
    _, folder_again, reused = run_job(there, planted_job(there, corpus, None), CONFIG)
    assert reused and folder_again == moved_old  # not built again


def test_an_older_sae_build_is_reused_in_place_and_found_moved(
    sae_data: Path, corpus: Path
) -> None:
    settings = sae_settings(sae_data)
    _, folder, _ = run_job(settings, sae_job(settings, corpus, None), CONFIG)
    old = as_older_build(
        settings, folder, f"sae:{settings.sae}@layers.1", corpus_texts(settings, corpus)
    )
    manifest, folder_again, reused = run_job(settings, sae_job(settings, corpus, None), CONFIG)
    assert reused and folder_again == old and manifest.evidence_id == old.name
    there = sae_settings(moved(sae_data))
    (there.data_dir / "evidence" / "latest.json").write_text(
        json.dumps({f"sae:{settings.sae}@layers.1": old.name})  # only the old entry
    )
    assert latest_folder(there) == there.data_dir / "evidence" / old.name  # by content


def test_a_build_whose_id_was_hashed_otherwise_is_built_again_not_refused(
    sae_data: Path, corpus: Path
) -> None:
    """An older glossator hashed ids otherwise: its folder holds the same corpus and
    config, but reusing it would fail the build's own id check."""
    settings = sae_settings(sae_data)
    manifest, folder, _ = run_job(settings, sae_job(settings, corpus, None), CONFIG)
    stale = folder.rename(folder.parent / "0123456789abcdef")
    old = manifest.model_copy(update={"evidence_id": stale.name})
    (stale / "manifest.json").write_text(old.model_dump_json())
    again, folder_again, reused = run_job(settings, sae_job(settings, corpus, None), CONFIG)
    assert not reused and folder_again == folder and again.evidence_id == manifest.evidence_id
    assert read_manifest(stale) == old  # left as it was
