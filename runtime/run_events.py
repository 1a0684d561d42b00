"""The live record of an agent run in Redis, readable from any process:

- `glossator:run:{id}:events`: a stream of events (`state` after every graph step, then
  `done` or `error`), so an SSE client can replay a run from the start or go on from
  its Last-Event-ID after a reconnect;
- `glossator:run:{id}:live`: the lease of the process driving the run (runtime/leases.py);
  when it lapses without a final event, the run was interrupted (its checkpoint lets it
  resume);
- `glossator:run:{id}:error`: why a run failed;
- `glossator:run:{id}:interrupted`: why a run stopped before its end (the server
  stopped, Redis went away), when the process could say so;
- `glossator:run:{id}:owner`: the id of the API key that started it over HTTP (kept for
  good, like the checkpoint: the owner may resume it).

Keys but the owner expire after a week: the checkpoint and the explanation store keep
what matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import redis

from identifiers import redis_keys
from identifiers.redis_keys import decoded
from runtime import leases

PREFIX = redis_keys.RUN
KEEP_S = 7 * 24 * 3600
LEASE_S = leases.LEASE_S
TICK_S = 10.0  # how often a live run calls its `tick` (e.g. to refresh its run slot)
MAX_EVENTS = 2000  # per run; a run has a few dozen steps
TERMINAL = ("done", "error", "interrupted")
_MAX_STREAM_PART = 2**64 - 1  # a stream id is two unsigned 64-bit integers, ms-seq


class BadEventId(ValueError):
    """A Last-Event-ID that is no stream id; the message says what one looks like."""


def events_key(run_id: str) -> str:
    return f"{PREFIX}:{run_id}:events"


def live_key(run_id: str) -> str:
    return f"{PREFIX}:{run_id}:live"


def error_key(run_id: str) -> str:
    return f"{PREFIX}:{run_id}:error"


def interrupted_key(run_id: str) -> str:
    return f"{PREFIX}:{run_id}:interrupted"


def owner_key(run_id: str) -> str:
    return f"{PREFIX}:{run_id}:owner"


def parse_event_id(text: str) -> str:
    """A client's Last-Event-ID as the stream id to read after; BadEventId when it is
    not one (Redis would refuse it mid-stream, after the 200 was sent)."""
    left, dash, right = text.strip().partition("-")
    parts = [left, right] if dash else [left]
    if not all(_stream_part(p) for p in parts):
        shown = text if len(text) <= 48 else text[:45] + "..."
        raise BadEventId(
            f"Last-Event-ID {shown!r} is not an event id: send one this stream sent, "
            "like 1712345678901-0 (two integers below 2**64), or none to replay from the start"
        )
    return "-".join(str(int(p)) for p in parts)


def _stream_part(text: str) -> bool:
    # 20 digits at most before int(): int() of thousands of digits is refused, slowly.
    return text.isascii() and text.isdigit() and len(text) <= 20 and int(text) <= _MAX_STREAM_PART


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


def record_end(client: Any, run_id: str, kind: str, reason: str) -> None:
    """Say why a run ended before its explanation: `error` (it failed) or `interrupted`
    (the server stopped, Redis went away: its checkpoint resumes it). Kept for its readers
    (GET /runs/{id}, the event stream), and the run's lease given up."""
    key = error_key(run_id) if kind == "error" else interrupted_key(run_id)
    client.set(key, reason, ex=KEEP_S)
    publish(client, run_id, kind, {"message": reason} if kind == "error" else {"reason": reason})
    leases.release(client, live_key(run_id))


def forget_end(client: Any, run_id: str) -> None:
    """A run starting again: its earlier failure or interruption no longer holds."""
    client.delete(error_key(run_id), interrupted_key(run_id))


def redis_unreachable(error: BaseException) -> bool:
    """Whether `error` (or one it was raised from) is a lost connection to Redis."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, redis.ConnectionError | redis.TimeoutError | ConnectionError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
    """Hold the run's lease for the block (a beat every leases.BEAT_S, and `tick` every
    TICK_S) and give a step callback that publishes each state (`drive`'s on_state). The
    caller publishes the final event."""
    leases.beat(client, live_key(run_id))

    async def keep() -> None:
        beats_per_tick = max(1, round(TICK_S / leases.BEAT_S))
        for n in itertools.count(1):
            await asyncio.sleep(leases.BEAT_S)
            with contextlib.suppress(redis.RedisError):  # Redis may be back by the next beat
                leases.beat(client, live_key(run_id))
                if tick is not None and n % beats_per_tick == 0:
                    tick()

    lease = asyncio.create_task(keep())
    try:
        yield lambda state: publish(client, run_id, "state", state.model_dump(mode="json"))
    finally:
        lease.cancel()
        with contextlib.suppress(redis.RedisError):  # else it lapses within LEASE_S
            leases.release(client, live_key(run_id))
