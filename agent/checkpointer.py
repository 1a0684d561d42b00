"""LangGraph checkpointers on plain Redis (no RedisJSON/RediSearch: the embedded Valkey
server has neither), built on `langgraph-checkpoint-plainredis`.

The package passes `langgraph-checkpoint-conformance` as shipped, but with LangGraph's
default integer channel versions two branches of one thread (a fork made by
`update_state` on an older checkpoint) write the same (channel, version) blob key, and
the fork silently rewrites the older branch's history. The savers here give each new
version a random suffix, as `InMemorySaver` does, so every blob key is unique.

A run killed mid-way resumes from its thread id (`graph.invoke(None, config)`) without
redoing finished steps only when it runs with `durability=DURABILITY` ("sync": each step's
checkpoint is written before the next step starts). Measured here with SIGKILL in the
second of three nodes: LangGraph's default "async" sometimes reran the first node or lost
the thread's first checkpoint, and "exit" kept nothing.

The savers revive only LangGraph's own safe types and the agent's state types named in
CHECKPOINTED_TYPES: LangGraph (1.x) revives unregistered types with a warning that a
future version will block them, which would leave runs checkpointed before an upgrade
unable to resume.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import urlsplit

import redis
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Durability
from langgraph_checkpoint_plainredis import AsyncRedisSaver, RedisSaver

from agent.state import (
    AgentState,
    Budget,
    Cost,
    Expect,
    Experiment,
    Explanation,
    Hypothesis,
    Outcome,
    OutputTest,
    Status,
)
from errors import ServiceError
from identifiers import redis_keys

# Every key the savers write starts with "glossator:checkpoint:".
CHECKPOINT_PREFIX = redis_keys.CHECKPOINT
# Pass as `durability=` to invoke/stream (and their async twins) for resumable runs.
DURABILITY: Durability = "sync"
# Every type of agent.state a checkpoint may hold (the graph's state is AgentState).
CHECKPOINTED_TYPES = (
    AgentState,
    Hypothesis,
    Experiment,
    Outcome,
    OutputTest,
    Budget,
    Cost,
    Explanation,
    Status,
    Expect,
)


def checkpoint_serde() -> JsonPlusSerializer:
    """The savers' serializer: LangGraph's own, reviving only its safe types and ours."""
    return JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINTED_TYPES)


class CheckpointStoreError(ServiceError):
    """The Redis server for checkpoints cannot be reached."""


def _next_version(current: str | int | None) -> str:
    """The integer part orders versions (LangGraph compares them with max()); the random
    fraction keeps two branches of a forked thread from sharing a blob key."""
    if current is None:
        number = 0
    elif isinstance(current, int):
        number = current
    else:
        number = int(current.split(".")[0])
    return f"{number + 1:032}.{random.random():016}"


class GlossatorRedisSaver(RedisSaver):
    """Sync saver for `graph.invoke()` / `stream()` / `get_state()`."""

    def get_next_version(self, current: str | int | None, channel: None) -> str:
        return _next_version(current)


class AsyncGlossatorRedisSaver(AsyncRedisSaver):
    """Async saver for `graph.ainvoke()` / `astream()` / `aget_state()`."""

    def get_next_version(self, current: str | int | None, channel: None) -> str:
        return _next_version(current)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _unreachable(url: str, error: Exception) -> CheckpointStoreError:
    return CheckpointStoreError(
        f"Cannot reach the checkpoint Redis at {_redact(url)}: {error}. "
        "Is the server running, and is the URL right?"
    )


@contextmanager
def redis_checkpointer(
    url: str, *, prefix: str = CHECKPOINT_PREFIX, ttl_s: int | None = None
) -> Iterator[GlossatorRedisSaver]:
    """A sync saver on the Redis at `url` (redis://, rediss:// or unix://), checked with
    PING and closed on exit. `ttl_s` expires idle threads; None keeps them forever."""
    saver = GlossatorRedisSaver(url=url, prefix=prefix, ttl=ttl_s, serde=checkpoint_serde())
    try:
        saver.client.ping()
    except (redis.RedisError, OSError) as error:
        saver.close()
        raise _unreachable(url, error) from error
    try:
        yield saver
    finally:
        saver.close()


@asynccontextmanager
async def async_redis_checkpointer(
    url: str, *, prefix: str = CHECKPOINT_PREFIX, ttl_s: int | None = None
) -> AsyncIterator[AsyncGlossatorRedisSaver]:
    """The async twin of `redis_checkpointer`; same keys, so either may resume a thread."""
    saver = AsyncGlossatorRedisSaver(url=url, prefix=prefix, ttl=ttl_s, serde=checkpoint_serde())
    try:
        await saver.client.ping()
    except (redis.RedisError, OSError) as error:
        await saver.aclose()
        raise _unreachable(url, error) from error
    try:
        yield saver
    finally:
        await saver.aclose()
