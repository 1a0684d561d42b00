"""`glossator explain` and `glossator explanation` as real subprocesses: planted features
with SmolLM2's tokenizer, the evidence built by the CLI, state and explanations in the
real Redis of the test session; the LLM reasoner against the scripted OpenAI-compatible
server of tests/llm_server.py, over real HTTP on loopback."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from runtime.redis_server import EmbeddedRedis
from tests.agent.test_llm_reasoner import EXPLANATION, by_step
from tests.cli_helpers import planted_cli_env, run_cli
from tests.llm_server import FakeLLMServer, Reply

pytestmark = pytest.mark.slow  # the real agent through `glossator explain` processes

PHRASES = [
    "I love my old dog",
    "they loved the quiet garden",
    "we are loving the new house",
    "the red computer hums softly",
    "two cats sat on a warm mat",
    "nothing happens on a Monday morning",
    "the river runs slowly to the hills",
    "what time is it now",
    "she lives in a small town by the sea",
    "the train was late again today",
]


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any, redis_server: EmbeddedRedis
) -> dict[str, str]:
    rng = random.Random(3)
    texts = [
        "\n".join(". ".join(rng.sample(PHRASES, 3)) for _ in range(rng.randint(1, 3)))
        for _ in range(400)
    ]
    return planted_cli_env(
        tmp_path_factory.mktemp("explain-cli"), smollm2_tokenizer, redis_server.url, texts
    )


def test_explain_then_show_the_stored_explanation(env: dict[str, str]) -> None:
    result = run_cli("explain", "word-love", "--planted", "--json", env=env)
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    explanation = run["explanation"]
    assert "love" in explanation["text"] and explanation["stopped_by"] == "decided"
    assert any(h["negative_control"] and h["status"] == "refuted" for h in run["hypotheses"])
    assert all(e["outcome"] is not None for e in run["experiments"])
    again = run_cli("explain", "word-love", "--planted", "--json", env=env)  # same thread
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["explanation"] == explanation  # finished: not rerun
    shown = run_cli("explanation", "word-love", "--planted", env=env)
    assert shown.returncode == 0, shown.stderr
    assert explanation["text"] in shown.stdout and "1 run(s) stored" in shown.stdout
    table = run_cli("explain", "word-love", "--planted", "--new", env={**env, "COLUMNS": "150"})
    assert table.returncode == 0, table.stderr
    assert "hypotheses" in table.stdout and "confirmed" in table.stdout


def test_explain_refuses_unknown_features(env: dict[str, str]) -> None:
    unknown = run_cli("explain", "99", "--planted", env=env)
    assert unknown.returncode == 2 and "valid indices 0..24" in unknown.stderr
    missing = run_cli("explanation", "word-computer", "--planted", env=env)
    assert missing.returncode == 2 and "glossator explain" in missing.stderr


def test_explain_many_prints_a_table_and_skips_silent_features(env: dict[str, str]) -> None:
    # In this corpus "colour-words" (2: red) fires and "dunder-names" (16) never does.
    result = run_cli("explain", "--features", "2,16", "--local", "--planted", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["explanations"]
    assert [r["feature"] for r in rows] == ["colour-words"]
    assert "red" in rows[0]["explanation"] and "skipped" in result.stderr


JUNK = Reply.text("Sorry, I can't help with that.")


def junk_for_number_words(body: dict[str, Any]) -> Reply:
    """The scripted agent replies for animal-words (3), junk for number-words (4)."""
    return by_step(body) if "Feature 3.\n" in body["messages"][1]["content"] else JUNK


def with_llm(env: dict[str, str], server: FakeLLMServer) -> dict[str, str]:
    return {
        **env,
        "GLOSSATOR_LLM_BASE_URL": server.base_url,
        "GLOSSATOR_LLM_MODEL": server.model,
        "GLOSSATOR_LLM_API_KEY": server.api_key,
    }


def test_an_llm_sending_junk_fails_runs_clearly_and_loses_nothing(env: dict[str, str]) -> None:
    explain = ("explain", "--planted", "--max-rounds", "1", "--json")
    with FakeLLMServer(responder=junk_for_number_words) as llm:
        # A batch: number-words fails, animal-words is still explained and stored.
        batch = run_cli(*explain, "--features", "3,4", "--local", env=with_llm(env, llm))
    assert batch.returncode == 1, batch.stderr
    (row,) = json.loads(batch.stdout)["explanations"]
    assert row["feature"] == "animal-words" and row["explanation"] == EXPLANATION
    assert row["llm_calls"] == 4 and row["stopped_by"] == "budget: rounds"
    assert "failed: feature number-words: model 'fake-model' gave no valid" in batch.stderr
    junk = [b for b in llm.requests if "Feature 4.\n" in b["messages"][1]["content"]]
    assert len(junk) == 3  # the ask and its two re-asks, then it gave up
    # A new run of animal-words on a server (so no cached reply) that sends only junk.
    with FakeLLMServer(responder=lambda body: JUNK) as junk_llm:
        failed = run_cli(*explain, "animal-words", "--new", env=with_llm(env, junk_llm))
    assert failed.returncode == 1 and failed.stdout == ""  # no explanation, real or fake
    assert "error:" in failed.stderr and "Traceback" not in failed.stderr
    assert "no valid _Hypotheses for the 'hypothesize' call" in failed.stderr
    assert "run the same command again" in failed.stderr
    # The explanation stored by the batch is still the current one, and the only run.
    shown = run_cli("explanation", "animal-words", "--planted", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    current = json.loads(shown.stdout)
    assert current["explanation"]["text"] == EXPLANATION and current["runs"] == 1
    assert current["explainer"] == "openai"
