"""A real agent run killed with SIGKILL mid-way resumes from its thread id in a new
process without redoing finished steps, and its LLM cost carries on from the checkpoint.

The agent is the real graph with real deps: planted-feature evidence, the real probe
runner, and the LLM reasoner over real HTTP to the scripted server of tests/llm_server.py
(which counts every request), state in the real Redis checkpointer. The run is killed
while its first `analyze` request hangs: by then hypothesize, design and run are done.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from agent.checkpointer import async_redis_checkpointer
from agent.deps import AgentDeps
from agent.graph import build_graph
from agent.llm_reasoner import LLMReasoner
from agent.state import AgentState
from llm_client import LLMClient
from probes.evidence.store import EvidenceStore
from probes.planted import PlantedFeatures
from probes.probe_runner import ProbeRunner
from runtime.redis_server import EmbeddedRedis
from tests.agent.test_llm_reasoner import EXPLANATION, PER_CALL, SCRIPT, llm_config, step_of
from tests.llm_server import FakeLLMServer

REPO = Path(__file__).resolve().parents[2]
THREAD = "resume-agent-word-love"
Planted = tuple[EvidenceStore, PlantedFeatures]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any) -> Path:
    """The real SmolLM2 tokenizer saved plainly: the child processes load it in a second."""
    folder = tmp_path_factory.mktemp("tokenizer")
    smollm2_tokenizer.save_pretrained(folder)
    return folder


def wait_for(done: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def saved_run(url: str, server: FakeLLMServer, planted_evidence: Planted) -> Any:
    """The thread's latest checkpoint, read by this (another) process."""
    store, planted = planted_evidence

    async def main() -> Any:
        async with LLMClient(llm_config(server)) as client, async_redis_checkpointer(url) as saver:
            deps = AgentDeps(LLMReasoner(client), ProbeRunner(planted), store)
            graph = build_graph(deps).compile(checkpointer=saver)
            return await graph.aget_state({"configurable": {"thread_id": THREAD}})

    return asyncio.run(main())


def test_sigkilled_agent_resumes_without_redoing_steps(
    planted_evidence: Planted,
    tokenizer_dir: Path,
    redis_server: EmbeddedRedis,
    redis_client: redis.Redis,
) -> None:
    store, _ = planted_evidence
    with FakeLLMServer() as server:
        args = [redis_server.url, THREAD, str(store.folder), str(tokenizer_dir)]
        command = [sys.executable, "-m", "tests.agent_resume_run", *args]
        command += [server.base_url, server.api_key]
        # Round 1's analyze (the third request) hangs until the process is killed.
        server.push(*SCRIPT[:2], replace(SCRIPT[2], delay_s=120.0))
        first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: len(server.requests) == 3 or first.poll() is not None)
        finally:
            first.kill()  # SIGKILL: no cleanup, no last checkpoint
            _, err = first.communicate()
        assert first.returncode == -signal.SIGKILL, err.decode()[-3000:]

        # The checkpoint holds the finished steps and the LLM cost they spent.
        saved = saved_run(redis_server.url, server, planted_evidence)
        assert saved.next == ("analyze",)
        killed = AgentState.model_validate(saved.values)
        assert [e.outcome is not None for e in killed.experiments] == [True] * 8
        assert (killed.cost.llm_calls, killed.cost.llm_tokens) == (2, 2 * PER_CALL)

        server.push(*SCRIPT[2:])
        resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    doc = json.loads(resumed.stdout.strip().splitlines()[-1])
    final = AgentState.model_validate(doc["state"])
    assert final.explanation is not None and final.explanation.text == EXPLANATION
    assert final.explanation.stopped_by == "decided"
    # Only the step that was killed asked again, with the identical request.
    steps = [step_of(body) for body in server.requests]
    assert steps == [
        "hypothesize", "design H1,H2,H3", "analyze H1,H2,H3",  # killed here
        "analyze H1,H2,H3", "design H2", "analyze H2", "conclude",
    ]  # fmt: skip
    assert server.requests[2] == server.requests[3]
    # The resumed process probed only round 2's texts: round 1's (E1-E8) were kept.
    assert doc["probed"] == 3 and final.cost.probe_texts == 11 == len(final.experiments)
    # The cost counts the calls made before the kill: 2 before, 4 after.
    assert final.cost.llm_calls == len(SCRIPT) == 6
    assert final.cost.llm_tokens == 6 * PER_CALL and final.explanation.cost == final.cost
