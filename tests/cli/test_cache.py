"""`glossator cache build|list|clear` as real subprocesses on a tiny real model: the
evidence pass then reads the cache, and its evidence equals the evidence read from the
model (same id, same bytes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sae.loading import save_sae
from tests.cli.test_evidence import _corpus_texts, _write_corpus
from tests.cli_helpers import run_cli
from tests.sae_helpers import identity_sae

pytestmark = pytest.mark.slow  # `glossator` processes that load a model


def _env(tiny_llama_dir: Path, root: Path, data: str) -> dict[str, str]:
    return {
        "GLOSSATOR_MODEL": str(tiny_llama_dir),
        "GLOSSATOR_SAE": str(root / "sae"),
        "GLOSSATOR_HOOKPOINT": "layers.1",
        "GLOSSATOR_DATA_DIR": str(root / data),
        "GLOSSATOR_DEVICE": "cpu",
    }


def _evidence_files(data: Path, evidence_id: str) -> dict[str, bytes]:
    folder = data / "evidence" / evidence_id
    return {p.name: p.read_bytes() for p in folder.glob("*.safetensors")}


def test_cache_build_list_and_evidence_from_it(tiny_llama_dir: Path, tmp_path: Path) -> None:
    save_sae(identity_sae(32), tmp_path / "sae")  # the tiny model's d_model is 32
    corpus = _write_corpus(tmp_path / "texts.jsonl", _corpus_texts())
    cached, plain = (
        _env(tiny_llama_dir, tmp_path, "cached"),
        _env(tiny_llama_dir, tmp_path, "plain"),
    )

    built = run_cli("cache", "build", "--corpus", str(corpus), "--json", env=cached)
    assert built.returncode == 0, built.stderr
    doc = json.loads(built.stdout)
    assert doc["texts"] == doc["corpus_texts"] == 60 and doc["tokens"] == doc["corpus_tokens"] > 0
    assert doc["bytes"] == 2 * 32 * doc["tokens"]  # float16, d_model 32
    assert "activation cache:" in built.stderr  # says what it will use before it starts

    listed = run_cli("cache", "list", "--json", env=cached)
    assert listed.returncode == 0, listed.stderr
    kinds = {row["kind"]: row for row in json.loads(listed.stdout)}
    assert kinds["activations"]["state"] == "complete"
    assert kinds["activations"]["tokens"] == doc["tokens"]
    assert kinds["tokens"]["texts"] == 60

    again = run_cli("cache", "build", "--corpus", str(corpus), env=cached)
    assert again.returncode == 0 and "already built" in again.stderr

    args = ("evidence", "build", "--corpus", str(corpus), "--no-redis", "--json")
    from_cache = run_cli(*args, env=cached)
    from_model = run_cli(*args, env=plain)
    assert from_cache.returncode == 0, from_cache.stderr
    assert from_model.returncode == 0, from_model.stderr
    a, b = json.loads(from_cache.stdout), json.loads(from_model.stdout)
    assert a["read_from"] == f"activation cache {doc['folder']}" and b["read_from"] == "model"
    assert a["evidence_id"] == b["evidence_id"] and a["tokens"] == b["tokens"] == doc["tokens"]
    assert _evidence_files(tmp_path / "cached", a["evidence_id"]) == _evidence_files(
        tmp_path / "plain", b["evidence_id"]
    )

    cleared = run_cli("cache", "clear", "--yes", env=cached)
    assert cleared.returncode == 0 and "freed" in cleared.stdout
    assert json.loads(run_cli("cache", "list", "--json", env=cached).stdout) == []


def test_cache_build_refuses_a_bound_too_small(tiny_llama_dir: Path, tmp_path: Path) -> None:
    save_sae(identity_sae(32), tmp_path / "sae")
    corpus = _write_corpus(tmp_path / "texts.jsonl", _corpus_texts()[:10])
    env = _env(tiny_llama_dir, tmp_path, "data")
    result = run_cli("cache", "build", "--corpus", str(corpus), "--max-gb", "0.0000001", env=env)
    assert result.returncode == 2
    assert "raise it" in result.stderr and "Traceback" not in result.stderr
