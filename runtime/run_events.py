"""The live record of an agent run in Redis, readable from any process:

- `glossator:run:{id}:events`: a stream of events (`state` after every graph step, then
  `done` or `error`), so an SSE client can replay a run from the start or go on from
  its Last-Event-ID after a reconnect;
- `glossator:run:{id}:live`: a lease the running process refreshes; when it lapses
  without a final event, the run was interrupted (its checkpoint lets it resume);
- `glossator:run:{id}:error`: why a run failed.

Keys expire after a week: the checkpoint and the explanation store keep what matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import redis

from identifiers import redis_keys
from identifiers.redis_keys import decoded

PREFIX = redis_keys.RUN
KEEP_S = 7 * 24 * 3600
LEASE_S = 30  # a live run refreshes its lease every LEASE_S / 3
MAX_EVENTS = 2000  # per run; a run has a few dozen steps
TERMINAL = ("done", "error", "interrupted")


def events_key(run_id: str) -> str:
    return f"{PREFIX}:{run_id}:events"


def live_key(run_id: str) -> str:
    return f"{PREFIX}:{run_id}:live"


def error_key(run_id: str) -> str:
    return f"{PREFIX}:{run_id}:error"


@dataclass
class RunEvent:
    id: str  # the stream entry id, for Last-Event-ID
    type: str
    data: dict[str, Any]


def publish(client: Any, run_id: str, kind: str, data: dict[str, Any]) -> None:
    """Append one event (sync client: called from the graph's step callback, in order)."""
    key = events_key(run_id)
    client.xadd(key, {"type": kind, "data": json.dumps(data)}, maxlen=MAX_EVENTS)
    client.expire(key, KEEP_S)


async def read_events(aclient: Any, run_id: str, after: str, block_ms: int) -> list[RunEvent]:
    """Events after stream id `after` ("0" from the start), waiting up to `block_ms`."""
    reply = await aclient.xread({events_key(run_id): after}, block=block_ms, count=100)
    events = []
    for _stream, entries in reply or []:
        for entry_id, fields in entries:
            values = {decoded(k): decoded(v) for k, v in fields.items()}
            events.append(RunEvent(decoded(entry_id), values["type"], json.loads(values["data"])))
    return events


async def follow(
    aclient: Any, run_id: str, after: str, still_going: Any, block_ms: int = 5_000
) -> AsyncIterator[RunEvent]:
    """Every event after `after` until a terminal one. `still_going()` (async) is asked
    whenever nothing arrived for `block_ms`; it returns a final event to end with (the
    run finished or stopped elsewhere, unseen by this stream) or None to keep waiting."""
    while True:
        events = await read_events(aclient, run_id, after, block_ms)
        for event in events:
            yield event
            if event.type in TERMINAL:
                return
            after = event.id
        if not events:
            final = await still_going()
            if final is not None:
                yield final
                return


@contextlib.asynccontextmanager
async def live(
    client: Any, run_id: str, tick: Callable[[], None] | None = None
) -> AsyncIterator[Callable[[Any], None]]:
    """Hold the run's lease for the block (refreshed every LEASE_S / 3, calling `tick`
    too) and give a step callback that publishes each state (`drive`'s on_state). The
    caller publishes the final event."""
    client.set(live_key(run_id), 1, ex=LEASE_S)

    async def keep() -> None:
        while True:
            await asyncio.sleep(LEASE_S / 3)
            with contextlib.suppress(redis.RedisError):  # Redis may be back by the next tick
                client.set(live_key(run_id), 1, ex=LEASE_S)
                if tick is not None:
                    tick()

    lease = asyncio.create_task(keep())
    try:
        yield lambda state: publish(client, run_id, "state", state.model_dump(mode="json"))
    finally:
        lease.cancel()
        with contextlib.suppress(redis.RedisError):  # else it expires within LEASE_S
            client.delete(live_key(run_id))
