"""The job queue: taskiq-redis's Redis Streams broker, one stream per subject.

A queue per `Subject.key` (`glossator:queue:<key>`) keeps a worker from taking features
of a dictionary it did not load. Every worker reads the stream in one consumer group
(XREADGROUP), so each message goes to one worker, and stays in the group's pending list
until that worker acknowledges it (XACK, then XDEL: the stream holds only open work).

`JobBroker` is taskiq-redis's `RedisStreamBroker` with three changes, each one a way the
stock `listen` loses or stalls work (read in taskiq-redis 1.2.4's source):
- it reads one message at a time (stock: 100), so one worker does not take a whole job
  while the others idle, and a killed worker strands only the messages it was running;
- it reclaims messages idle for `claim_after_s` (XAUTOCLAIM) on every pass, also when
  nothing new arrived (stock: only after a read that returned messages, so the last
  messages of a killed worker were never reclaimed), and the worker keeps its own
  in-flight messages fresh (`refresh_claims`), so a long run is never taken from a live
  worker however long it lasts;
- a lost connection (a Redis restart) is waited out and the loop goes on (stock: the
  error ends the worker); an ack retries until Redis is back.
The group reads from the stream's start ("0", stock "$"), so messages added before the
first worker created the group are not skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import redis
import redis.asyncio
from taskiq import AckableMessage
from taskiq.message import TaskiqMessage
from taskiq_redis import RedisStreamBroker

from identifiers import redis_keys
from identifiers.redis_keys import decoded

log = logging.getLogger(__name__)

EXPLAIN_TASK = "glossator.explain_feature"
GROUP = "glossator-workers"
CLAIM_AFTER_S = 60.0  # a killed worker's messages go to a live one after this long
RETRY_S = 1.0  # the pause before trying Redis again
ENQUEUE_CHUNK = 1000  # XADDs per pipeline round trip
# What a Redis restart looks like to a client: refused or dropped connections.
REDIS_DOWN: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,  # the builtin: a reset or refused socket that redis-py did not wrap
)


def queue_name(subject_key: str) -> str:
    return redis_keys.queue(subject_key)


class JobBroker(RedisStreamBroker):
    """The Redis Streams broker, safe against killed workers and Redis restarts."""

    def __init__(self, url: str, subject_key: str, claim_after_s: float = CLAIM_AFTER_S) -> None:
        super().__init__(
            url,
            queue_name=queue_name(subject_key),
            consumer_group_name=GROUP,
            consumer_name=f"worker-{uuid.uuid4().hex[:12]}",
            consumer_id="0",
            idle_timeout=int(claim_after_s * 1000),
            xread_count=1,
        )
        self.inflight: dict[str, str] = {}  # task id -> stream id, delivered here, not acked

    async def kick_many(self, messages: list[TaskiqMessage]) -> None:
        """Add the messages to the stream, a pipeline round trip per chunk."""
        await self._declare_consumer_group()
        async with redis.asyncio.Redis(connection_pool=self.connection_pool) as conn:
            for start in range(0, len(messages), ENQUEUE_CHUNK):
                async with conn.pipeline(transaction=False) as pipe:
                    for message in messages[start : start + ENQUEUE_CHUNK]:
                        pipe.xadd(self.queue_name, {b"data": self.formatter.dumps(message).message})
                    await pipe.execute()

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        async with redis.asyncio.Redis(connection_pool=self.connection_pool) as conn:
            while True:
                try:
                    batch = await self._next(conn)
                except REDIS_DOWN as err:
                    log.warning("Redis unreachable (%s); trying again in %g s", err, RETRY_S)
                    await asyncio.sleep(RETRY_S)
                    continue
                for msg_id, fields in batch:
                    task_id = self._task_id(fields[b"data"]) or msg_id
                    self.inflight[task_id] = msg_id
                    yield AckableMessage(data=fields[b"data"], ack=self._acker(task_id, msg_id))

    async def _next(self, conn: Any) -> list[tuple[str, dict[bytes, bytes]]]:
        """A message idle too long in another consumer's hands, else a new one."""
        try:
            _, claimed, *_ = await conn.xautoclaim(
                self.queue_name, GROUP, self.consumer_name, self.idle_timeout, count=1
            )
            if claimed:
                log.info("reclaimed %s from a worker that went quiet", claimed[0][0])
                return [(decoded(i), f) for i, f in claimed if f]
            fetched = await conn.xreadgroup(
                GROUP, self.consumer_name, {self.queue_name: ">"}, count=1, block=self.block
            )
        except redis.ResponseError as err:
            if "NOGROUP" not in str(err):
                raise
            await self._declare_consumer_group()  # a server that lost its data
            return []
        return [(decoded(i), f) for _, entries in fetched or [] for i, f in entries]

    def _task_id(self, data: bytes) -> str | None:
        try:
            return self.formatter.loads(data).task_id
        except ValueError:
            return None  # the receiver refuses (and acknowledges) it

    def release(self, task_id: str) -> None:
        """Stop keeping a message claimed whose task ended without an ack: it goes to the
        next worker that reclaims it (this one included) after `claim_after_s`."""
        self.inflight.pop(task_id, None)

    def _acker(self, task_id: str, msg_id: str) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            while True:
                try:
                    async with redis.asyncio.Redis(connection_pool=self.connection_pool) as conn:
                        pipe = conn.pipeline(transaction=True)
                        pipe.xack(self.queue_name, GROUP, msg_id)
                        pipe.xdel(self.queue_name, msg_id)
                        await pipe.execute()
                    break
                except REDIS_DOWN as err:  # unacked work would run again: worth a wait
                    log.warning("ack of %s failed (%s); trying again", msg_id, err)
                    await asyncio.sleep(RETRY_S)
            self.inflight.pop(task_id, None)

        return ack

    async def refresh_claims(self) -> None:
        """Reset the idle time of the messages this worker is running (XCLAIM to itself,
        JUSTID), so no other worker reclaims them while this one is alive."""
        ids: list[Any] = sorted(self.inflight.values())
        if not ids:
            return
        async with redis.asyncio.Redis(connection_pool=self.connection_pool) as conn:
            await conn.xclaim(self.queue_name, GROUP, self.consumer_name, 0, ids, justid=True)

    async def leave(self) -> None:
        """Remove this consumer from the group when it holds no messages (after a clean
        shutdown), so the group lists only consumers that may still come back."""
        async with redis.asyncio.Redis(connection_pool=self.connection_pool) as conn:
            pending = await conn.xpending_range(
                self.queue_name, GROUP, "-", "+", 1, consumername=self.consumer_name
            )
            if not pending:
                await conn.xgroup_delconsumer(self.queue_name, GROUP, self.consumer_name)


def explain_message(job_id: str, feature: int) -> TaskiqMessage:
    """The taskiq message of one feature of a job (the worker registers the task)."""
    return TaskiqMessage(
        task_id=f"{job_id}:{feature}:{time.time_ns()}",
        task_name=EXPLAIN_TASK,
        labels={},
        args=[],
        kwargs={"job_id": job_id, "feature": feature},
    )


async def enqueue_features(url: str, subject_key: str, job_id: str, features: list[int]) -> None:
    """One message per feature on the subject's queue."""
    broker = JobBroker(url, subject_key)
    try:
        await broker.kick_many([explain_message(job_id, f) for f in features])
    finally:
        await broker.shutdown()
