"""The Redis checkpointers: LangGraph's conformance suite (sync and async) on the real
embedded server, history kept intact across a fork, and a run SIGKILLed mid-graph that
resumes from its thread id without redoing finished nodes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypedDict

import pytest
import redis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES
from langgraph.graph import END, START, StateGraph

from agent.checkpointer import (
    CHECKPOINT_PREFIX,
    CheckpointStoreError,
    GlossatorRedisSaver,
    async_redis_checkpointer,
    redis_checkpointer,
)
from runtime.redis_server import EmbeddedRedis
from tests.checkpoint_resume_graph import build_graph

pytestmark = pytest.mark.slow  # runs killed and resumed in other processes

REPO = Path(__file__).resolve().parents[2]


class SyncSaverUnderAsyncApi(GlossatorRedisSaver):
    """The conformance suite only calls the async API; this routes it to the sync methods
    so the suite checks the sync saver's own code."""

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self.put_writes(config, writes, task_id, task_path)

    async def alist(  # type: ignore[override]
        self, config: RunnableConfig | None, **kwargs: Any
    ) -> AsyncIterator[CheckpointTuple]:
        for item in self.list(config, **kwargs):
            yield item

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)


async def _sync_saver(url: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    saver = SyncSaverUnderAsyncApi(url=url, prefix=CHECKPOINT_PREFIX)
    yield saver
    saver.close()


async def _async_saver(url: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    async with async_redis_checkpointer(url) as saver:
        yield saver


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_conformance_suite_passes(
    mode: str, redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    make = _sync_saver if mode == "sync" else _async_saver

    async def factory() -> AsyncIterator[BaseCheckpointSaver[Any]]:
        async for saver in make(redis_server.url):
            yield saver

    report = asyncio.run(validate(checkpointer_test(name=f"glossator-{mode}")(factory)))
    report.print_report()  # shown with -s
    results = report.results
    failures = [f for result in results.values() for f in result.failures]
    assert not failures, "\n".join(failures)
    for capability in BASE_CAPABILITIES:
        result = results[capability.value]
        assert result.detected and result.passed and result.tests_passed > 0, capability
    assert report.passed_all()
    keys = [key.decode() for key in redis_client.scan_iter(count=1000)]
    assert keys and all(key.startswith(CHECKPOINT_PREFIX + ":") for key in keys)


class Counter(TypedDict):
    text: str


def add_a(state: Counter) -> Counter:
    return {"text": state["text"] + "a"}


def add_b(state: Counter) -> Counter:
    return {"text": state["text"] + "b"}


def test_fork_keeps_the_older_branch(
    redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    """With integer channel versions (the plainredis default) this fork rewrote the
    later checkpoint's value to "FORK"."""
    builder = StateGraph(Counter)
    builder.add_node("a", add_a)
    builder.add_node("b", add_b)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    config: RunnableConfig = {"configurable": {"thread_id": "fork"}}
    with redis_checkpointer(redis_server.url) as saver:
        graph = builder.compile(checkpointer=saver)
        graph.invoke({"text": ""}, config)
        history = list(graph.get_state_history(config))
        after_a = next(s for s in history if s.values == {"text": "a"})
        graph.update_state(after_a.config, {"text": "FORK"})
        for snapshot in history:
            assert graph.get_state(snapshot.config).values == snapshot.values
        assert graph.get_state(config).values == {"text": "FORK"}


def _run_graph(url: str, tmp_path: Path, mode: str, phase: str) -> subprocess.CompletedProcess[str]:
    args = [url, "resume-thread", str(tmp_path / "log"), str(tmp_path / "marker"), mode, phase]
    return subprocess.run(
        [sys.executable, "-m", "tests.checkpoint_resume_graph", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_sigkilled_run_resumes_without_redoing_nodes(
    mode: str, redis_server: EmbeddedRedis, redis_client: redis.Redis, tmp_path: Path
) -> None:
    first = _run_graph(redis_server.url, tmp_path, mode, "start")
    assert first.returncode == -signal.SIGKILL, first.stdout + first.stderr

    # Another process sees the checkpoint taken after node_1.
    config: RunnableConfig = {"configurable": {"thread_id": "resume-thread"}}
    with redis_checkpointer(redis_server.url) as saver:
        state = build_graph().compile(checkpointer=saver).get_state(config)
    assert state.next == ("node_2",)
    assert state.values["visited"] == ["node_1"]

    second = _run_graph(redis_server.url, tmp_path, mode, "resume")
    assert second.returncode == 0, second.stdout + second.stderr
    final = json.loads(second.stdout.strip().splitlines()[-1])
    assert final["visited"] == ["node_1", "node_2", "node_3"]
    runs = (tmp_path / "log").read_text().splitlines()
    assert runs == ["node_1", "node_2", "node_2", "node_3"]  # node_2 once killed


def test_unreachable_server_fails_clearly(tmp_path: Path) -> None:
    url = f"unix://{tmp_path / 'absent.sock'}"
    with (
        pytest.raises(CheckpointStoreError, match="Cannot reach the checkpoint Redis"),
        redis_checkpointer(url),
    ):
        pass


def test_unreachable_server_fails_clearly_async(tmp_path: Path) -> None:
    async def open_saver() -> None:
        async with async_redis_checkpointer(f"unix://{tmp_path / 'absent.sock'}"):
            pass

    with pytest.raises(CheckpointStoreError, match=r"absent\.sock"):
        asyncio.run(open_saver())
