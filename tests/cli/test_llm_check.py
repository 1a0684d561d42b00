"""`glossator llm check` against real servers: llama.cpp (grammars, logprobs) and the
protocol server of tests/llm_server.py where a server must refuse modes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli_helpers import run_cli
from tests.llama_fixtures import LlamaServer
from tests.llm_server import FakeLLMServer, Reply


def _env(tmp_path: Path, base_url: str, model: str, **more: str) -> dict[str, str]:
    return {
        "GLOSSATOR_DATA_DIR": str(tmp_path),
        "GLOSSATOR_LLM_BASE_URL": base_url,
        "GLOSSATOR_LLM_MODEL": model,
        **more,
    }


def test_llm_check_on_llama_cpp(llama_server: LlamaServer, tmp_path: Path) -> None:
    env = _env(tmp_path, llama_server.base_url, llama_server.model, GLOSSATOR_LLM_TIMEOUT="1")
    done = run_cli("llm", "check", "--json", env=env)
    assert done.returncode == 0, done.stderr
    check: dict[str, Any] = json.loads(done.stdout)
    assert check["modes"]["json_schema"] == "ok" and check["json_mode"] == "json_schema"
    assert check["logprobs"] is True and check["tokens_per_s"] > 0
    # The agent's longest reply (six hypotheses: 1,024 tokens for each two) at this speed
    # needs more than 1 s: the exact setting to change, sized for that reply.
    assert any("GLOSSATOR_LLM_TIMEOUT=" in line for line in check["advice"])
    assert any("3,072-token reply" in line for line in check["advice"]), check["advice"]
    expected = 2 * 3072 / check["tokens_per_s"]  # the speed is shown rounded
    assert abs(check["suggested_timeout_s"] - expected) <= 1 + 0.02 * expected
    shorter = {**env, "GLOSSATOR_LLM_MAX_TOKENS": "256", "COLUMNS": "200"}
    table = run_cli("llm", "check", env=shorter)
    assert table.returncode == 0 and "glossator will use json_mode 'json_schema'" in table.stdout
    assert "768-token reply" in table.stdout


def test_llm_check_on_a_server_without_json_modes(tmp_path: Path) -> None:
    """A server that refuses response_format: glossator falls back to prompting, and
    says so; it sends no logprobs, so the judges score from text."""
    prose = Reply.text('{"colours": ["red", "blue"], "answer": "yes"}')
    with FakeLLMServer(response_formats=frozenset({"text"}), responder=lambda _: prose) as server:
        env = _env(tmp_path, server.base_url, server.model, GLOSSATOR_LLM_API_KEY=server.api_key)
        done = run_cli("llm", "check", "--json", env=env)
    assert done.returncode == 0, done.stderr
    check = json.loads(done.stdout)
    assert check["modes"] == {"json_schema": "refused", "json_object": "refused"}
    assert check["json_mode"] == "off" and check["logprobs"] is False
    assert any("does not decode under a JSON schema" in line for line in check["advice"])


def test_llm_check_without_a_server_says_what_to_set(tmp_path: Path) -> None:
    done = run_cli("llm", "check", env={"GLOSSATOR_DATA_DIR": str(tmp_path)})
    assert done.returncode == 2 and "GLOSSATOR_LLM_BASE_URL" in done.stderr
    unreachable = _env(tmp_path, "http://127.0.0.1:9/v1", "m", GLOSSATOR_LLM_TIMEOUT="2")
    done = run_cli("llm", "check", env=unreachable)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "127.0.0.1:9" in done.stderr
