"""`glossator evidence build` and `glossator feature N` as real subprocesses: planted
features read with SmolLM2's real tokenizer, and a tiny real model with an identity SAE."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from probes.evidence.summary import LATEST_KEY, FeatureSummary, summary_key
from probes.planted import default_spec_path, load_planted_spec
from runtime.redis_server import EmbeddedRedis
from sae.loading import save_sae
from tests.cli_helpers import GLOSSATOR, run_cli
from tests.sae_helpers import identity_sae

pytestmark = pytest.mark.slow  # evidence builds through `glossator` processes

LOVE_FORMS = ("love", "loves", "loved", "loving", "lover", "lovers")
_PARTS = [
    "I love long walks by the sea",
    "she loved the old garden",
    "they are loving the new house",
    "a lovely day for a picnic",  # "lovely" is not a form of the word: no firing
    "the red computer hums",
    "two cats sat on a mat",
    "nothing happens on Monday",
    "the river runs slowly to the hills",
    "what time is it now",
    "Lovers meet under the bridge",
]


def _corpus_texts() -> list[str]:
    return [f"{_PARTS[i % 10]}, and {_PARTS[(3 * i + 1) % 10]}. Note {i}." for i in range(60)]


def _write_corpus(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def _is_love_piece(token: str) -> bool:
    """The token is one of the planted rule's words, or a piece of one."""
    piece = token.strip().lower()
    return bool(piece) and any(form.startswith(piece) for form in LOVE_FORMS)


def _peak_token(example: dict[str, Any]) -> str:
    acts = example["acts"]
    return str(example["tokens"][acts.index(max(acts))])


@pytest.fixture(scope="module")
def planted_env(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any) -> dict[str, str]:
    """GLOSSATOR_MODEL is a folder with just SmolLM2's tokenizer: all planted features need."""
    root = tmp_path_factory.mktemp("evidence-cli")
    smollm2_tokenizer.save_pretrained(root / "smollm2-tokenizer")
    return {
        "GLOSSATOR_MODEL": str(root / "smollm2-tokenizer"),
        "GLOSSATOR_DATA_DIR": str(root / "data"),
        "GLOSSATOR_DEVICE": "cpu",
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_corpus(tmp_path_factory.mktemp("corpus") / "texts.jsonl", _corpus_texts())


@pytest.fixture(scope="module")
def planted_build(planted_env: dict[str, str], corpus: Path) -> dict[str, Any]:
    args = ("evidence", "build", "--planted", "--corpus", str(corpus), "--no-redis", "--json")
    result = run_cli(*args, env=planted_env)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_build_reports_the_pass(planted_build: dict[str, Any]) -> None:
    n_specs = len(load_planted_spec(default_spec_path()))
    assert planted_build["source"] == "planted" and not planted_build["reused"]
    assert planted_build["features"] == n_specs
    assert 0 < planted_build["features_alive"] < n_specs  # love fires, dunder names do not
    assert planted_build["texts"] == 60 and planted_build["tokens"] > 60
    splits = planted_build["contexts_per_split"]
    assert splits["explain"] > 0 and splits["score"] > 0
    assert splits["explain"] + splits["score"] == planted_build["contexts"]
    assert planted_build["published"] is None
    assert (Path(planted_build["folder"]) / "manifest.json").is_file()


def test_feature_by_name_shows_the_planted_words(
    planted_build: dict[str, Any], planted_env: dict[str, str]
) -> None:
    result = run_cli("feature", "word-love", "--planted", "--top", "5", "--json", env=planted_env)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["name"] == "word-love" and doc["feature"] == 0
    assert doc["evidence_id"] == planted_build["evidence_id"]
    assert doc["stats"]["fired_tokens"] > 0 and doc["stats"]["max_act"] == 6.0
    assert 0 < len(doc["top"]) <= 5
    assert all(_is_love_piece(_peak_token(e)) for e in doc["top"]), doc["top"]
    assert all(max(e["acts"]) == 0 for e in doc["non_activating"])
    assert doc["promoted"] is None and doc["similar"] is None  # no decoder for planted
    # over the whole explain split: the rule's tokens, each firing wherever it occurs
    firing = doc["token_firing"]
    pieces = [t["token"].strip().lower() for t in firing]
    assert "love" in pieces and all(any(p in form for form in LOVE_FORMS) for p in pieces)
    assert all(t["fires"] == t["occurrences"] > 0 for t in firing)

    shown = run_cli("feature", "word-love", "--planted", env={**planted_env, "FORCE_COLOR": "1"})
    assert shown.returncode == 0, shown.stderr
    assert "word-love" in shown.stdout and "activation histogram" in shown.stdout
    assert "\x1b[" in shown.stdout and " love" in shown.stdout  # highlighted contexts
    assert "fires most on" in shown.stdout


def test_feature_errors_are_clear(
    planted_build: dict[str, Any], planted_env: dict[str, str], tmp_path: Path
) -> None:
    n_specs = len(load_planted_spec(default_spec_path()))
    outside = run_cli("feature", str(n_specs), "--planted", env=planted_env)
    assert outside.returncode == 2
    assert f"0..{n_specs - 1}" in outside.stderr
    unknown = run_cli("feature", "word-hate", "--planted", env=planted_env)
    assert unknown.returncode == 2 and "word-love" in unknown.stderr
    empty = {**planted_env, "GLOSSATOR_DATA_DIR": str(tmp_path / "empty")}
    none_yet = run_cli("feature", "3", env=empty)
    assert none_yet.returncode == 2 and "glossator evidence build" in none_yet.stderr


def test_rebuild_reuses_the_evidence_and_publishes_it(
    planted_build: dict[str, Any],
    planted_env: dict[str, str],
    corpus: Path,
    redis_server: EmbeddedRedis,
    redis_client: redis.Redis,
) -> None:
    env = {**planted_env, "GLOSSATOR_REDIS_URL": redis_server.url}
    result = run_cli("evidence", "build", "--planted", "--corpus", str(corpus), env=env)
    assert result.returncode == 0, result.stderr
    key = planted_build["evidence_id"]
    n_specs = len(load_planted_spec(default_spec_path()))
    assert f"reused cached evidence {key}" in result.stdout
    assert f"published: {n_specs} summaries" in result.stdout
    assert redis_client.hlen(summary_key(key)) == n_specs
    slug = f"planted:{default_spec_path()}@{planted_env['GLOSSATOR_MODEL']}"
    assert redis_client.hget(LATEST_KEY, slug) == key.encode()
    love = FeatureSummary.model_validate_json(redis_client.hget(summary_key(key), "0") or b"")
    assert love.fired_tokens > 0 and all(_is_love_piece(t) for t in love.peak_tokens)


def test_sae_evidence_has_the_decoder_side(tiny_llama_dir: Path, tmp_path: Path) -> None:
    save_sae(identity_sae(32), tmp_path / "sae")  # the tiny model's d_model is 32
    env = {
        "GLOSSATOR_MODEL": str(tiny_llama_dir),
        "GLOSSATOR_SAE": str(tmp_path / "sae"),
        "GLOSSATOR_HOOKPOINT": "layers.1",
        "GLOSSATOR_DATA_DIR": str(tmp_path / "data"),
        "GLOSSATOR_DEVICE": "cpu",
    }
    corpus = _write_corpus(tmp_path / "texts.jsonl", _corpus_texts()[:20])
    args = ("evidence", "build", "--max-tokens", "300", "--no-redis", "--corpus", str(corpus))
    built = run_cli(*args, "--json", env=env)
    assert built.returncode == 0, built.stderr
    doc = json.loads(built.stdout)
    assert doc["source"] == "sae" and doc["features"] == 64 and doc["tokens"] > 0
    assert doc["features_alive"] > 0

    result = run_cli("feature", "0", "--json", env=env)
    assert result.returncode == 0, result.stderr
    feature = json.loads(result.stdout)
    assert feature["evidence_id"] == doc["evidence_id"] and "name" not in feature
    assert feature["promoted"] and feature["suppressed"]
    assert feature["similar"] and all(0 < n["feature"] < 64 for n in feature["similar"])


def test_build_killed_mid_pass_resumes_to_the_same_files(
    planted_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL after the first checkpoint; the rerun finishes from it, identically."""
    texts = [f"{_PARTS[i % 10]} and {_PARTS[(7 * i) % 10]}, take {i}." for i in range(6000)]
    big = _write_corpus(tmp_path / "big.jsonl", texts)
    args = ["evidence", "build", "--planted", "--corpus", str(big), "--no-redis", "--json"]
    killed_env = {**planted_env, "GLOSSATOR_DATA_DIR": str(tmp_path / "killed")}
    proc = subprocess.Popen(
        [GLOSSATOR, *args, "--checkpoint-every", "0"],
        env={**os.environ, **killed_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    evidence_dir = tmp_path / "killed" / "evidence"
    deadline = time.monotonic() + 120
    while not list(evidence_dir.glob("*/checkpoint/state.safetensors")):
        assert proc.poll() is None, "the build ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(evidence_dir.glob("*/manifest.json")), "killed too late to test resume"
    resumed = run_cli(*args, env=killed_env)
    assert resumed.returncode == 0, resumed.stderr
    straight_env = {**planted_env, "GLOSSATOR_DATA_DIR": str(tmp_path / "straight")}
    straight = run_cli(*args, env=straight_env)
    assert straight.returncode == 0, straight.stderr
    key = json.loads(straight.stdout)["evidence_id"]
    assert json.loads(resumed.stdout)["evidence_id"] == key
    for name in ("features.safetensors", "contexts.safetensors", "pool.safetensors"):
        got = (evidence_dir / key / name).read_bytes()
        assert got == (tmp_path / "straight" / "evidence" / key / name).read_bytes(), name


def test_dead_redis_fails_clearly_and_keeps_the_evidence(
    planted_env: dict[str, str], corpus: Path, planted_build: dict[str, Any]
) -> None:
    env = {**planted_env, "GLOSSATOR_REDIS_URL": "redis://127.0.0.1:1"}  # nothing listens
    result = run_cli("evidence", "build", "--planted", "--corpus", str(corpus), env=env)
    assert result.returncode == 2
    assert "redis" in result.stderr.lower() and "Traceback" not in result.stderr
    folder = Path(planted_build["folder"])
    assert (folder / "manifest.json").exists()  # the evidence on disk is untouched
    again = run_cli(
        "evidence",
        "build",
        "--planted",
        "--corpus",
        str(corpus),
        "--no-redis",
        "--json",
        env=planted_env,
    )
    assert again.returncode == 0 and json.loads(again.stdout)["reused"] is True
