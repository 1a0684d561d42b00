"""The CLI's LLM paths against a real server: llama.cpp (tests/llama_fixtures.py) serving
the shipped SmolLM2-135M GGUF. The agent with GLOSSATOR_REASONER=openai through `glossator
explain` (one feature, a batch in process, a batch queued for a `glossator worker`), and
`glossator bench` with the one-shot explainer and the LLM judge.

A 135M model cannot reason, and what it writes may change with the build's numerics:
these tests hold the path to its contract, not the model to good explanations. Every
feature ends explained and stored, with the calls and tokens the server counted, or
failed with a message that says what to do; nothing ends in a traceback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import GLOSSATOR, run_cli
from tests.llama_fixtures import LlamaServer

pytestmark = pytest.mark.slow  # agent runs through a real LLM server

# The server explains each feature once: the response cache answers word-love's requests
# after the single-feature test (temperature 0: the same evidence asks the same), so each
# batch puts one new feature on the server beside one the cache serves.
BATCH = ("word-love", "colour-words")
QUEUED = ("animal-words", "word-love")
ONE_ROUND = ("--planted", "--max-rounds", "1", "--json")
# hypothesize, then one round (design, analyze), then conclude
CALLS_OF_ONE_ROUND = 4


@pytest.fixture(scope="module")
def llama(planted_env: dict[str, str], llama_server: LlamaServer) -> dict[str, str]:
    """The session's planted data dir, explained by the openai reasoner via llama.cpp."""
    return {
        **planted_env,
        "GLOSSATOR_REASONER": "openai",
        "GLOSSATOR_LLM_BASE_URL": llama_server.base_url,
        "GLOSSATOR_LLM_MODEL": llama_server.model,
        # SmolLM2 under a grammar writes every string to its longest: shorter replies
        # keep these tests at seconds a call (a cut-off one is re-asked, then fails).
        "GLOSSATOR_LLM_MAX_TOKENS": "512",
    }


def asked(row: dict[str, Any]) -> int:
    return int(row["llm_calls"] + row["llm_cached_calls"])


def failed_features(stderr: str) -> set[str]:
    return set(re.findall(r"failed: feature ([\w-]+): model '[^']+' gave no valid", stderr))


def assert_each_explained_or_failed_clearly(
    result: subprocess.CompletedProcess[str], features: tuple[str, ...]
) -> list[dict[str, Any]]:
    assert "Traceback" not in result.stderr, result.stderr
    rows = json.loads(result.stdout)["explanations"]
    explained = {row["feature"] for row in rows}
    failed = failed_features(result.stderr)
    assert explained | failed == set(features) and not explained & failed, result.stderr
    assert result.returncode == (1 if failed else 0), result.stderr
    for row in rows:  # asked of the server, or answered by the cache of an earlier test
        assert row["explanation"].strip() and asked(row) >= CALLS_OF_ONE_ROUND
    # The progress line's LLM activity (the last frame, as stderr is no terminal).
    assert re.search(r"LLM \d+ calls, [\d,]+ tokens", result.stderr), result.stderr
    return list(rows)


def test_one_feature_is_explained_by_llama_cpp_or_fails_clearly(llama: dict[str, str]) -> None:
    result = run_cli("explain", "word-love", "--new", *ONE_ROUND, env=llama)
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 1:  # the model's replies stayed invalid after its re-asks
        assert "gave no valid" in result.stderr and "run the same command again" in result.stderr
        assert result.stdout == ""
        return
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    cost = run["explanation"]["cost"]
    assert cost["llm_calls"] >= CALLS_OF_ONE_ROUND and cost["llm_cached_calls"] == 0
    assert cost["llm_tokens"] > 1000  # the server's own usage counts: the prompts are long
    assert run["explanation"]["stopped_by"] in ("decided", "budget: rounds")
    assert all(e["outcome"] is not None for e in run["experiments"])  # the probes ran
    shown = run_cli("explanation", "word-love", "--planted", "--json", env=llama)
    assert shown.returncode == 0, shown.stderr
    stored = json.loads(shown.stdout)
    assert stored["explanation"]["text"] == run["explanation"]["text"]
    assert stored["explainer"] == "openai"


def test_a_batch_in_process_explains_or_fails_each_feature_on_its_own(
    llama: dict[str, str],
) -> None:
    batch = ("explain", "--features", ",".join(BATCH), "--local", "--new", *ONE_ROUND)
    result = run_cli(*batch, env=llama)
    rows = assert_each_explained_or_failed_clearly(result, BATCH)
    # What was explained is stored; what failed stored nothing.
    for feature in BATCH:
        shown = run_cli("explanation", feature, "--planted", "--json", env=llama)
        explained = [r for r in rows if r["feature"] == feature]
        if explained:
            assert shown.returncode == 0, shown.stderr
            text = json.loads(shown.stdout)["explanation"]["text"]
            assert text == explained[0]["explanation"]


def test_a_batch_queued_for_a_worker_is_explained_through_llama_cpp(
    llama: dict[str, str], tmp_path: Path
) -> None:
    features = QUEUED
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [GLOSSATOR, "worker", "--planted", "--concurrency", "2"],
        env={**os.environ, **llama},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        queued = ("explain", "--features", ",".join(features), "--new", *ONE_ROUND)
        result = run_cli(*queued, env=llama)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    worker_log = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in worker_log, worker_log
    assert "Traceback" not in result.stderr, result.stderr
    rows = json.loads(result.stdout)["explanations"]
    for row in rows:
        assert row["feature"] in features and row["explanation"].strip()
        assert asked(row) >= CALLS_OF_ONE_ROUND
    explained = {row["feature"] for row in rows}
    for feature in set(features) - explained:  # the job names why it failed
        assert re.search(rf"{feature}.*gave no valid", result.stderr), result.stderr
    assert result.returncode == (0 if explained == set(features) else 1), result.stderr


def test_bench_scores_oneshot_with_the_llm_judge_and_shows_its_llm_activity(
    llama: dict[str, str], tmp_path: Path
) -> None:
    """`glossator bench` with the one-shot explainer and the LLM judge, both through
    llama.cpp (the run the issue saw go silent for 10 minutes): it finishes, and its
    progress line shows the LLM's calls and tokens."""
    out = tmp_path / "bench.json"
    args = [
        "bench", "--planted", "--features", "word-love",
        "--explainers", "oneshot,toptokens", "--judges", "llm", "--scorers", "detection",
        "--non-activating", "2", "--per-quantile", "1", "--json", str(out),
    ]  # fmt: skip
    result = run_cli(*args, env={**llama, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(r"LLM [1-9]\d* calls, [\d,]+ tokens", result.stderr), result.stderr
    rows = json.loads(out.read_text())["results"]
    scored = [r for r in rows if r["score"] is not None]
    assert {r["explainer"] for r in scored} == {"oneshot", "toptokens"}, rows
    assert all(0.0 <= r["score"] <= 1.0 for r in scored)
