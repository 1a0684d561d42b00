"""Per-key quotas and the anonymous rate limit of the HTTP service, counted in Redis (so
every server process shares them); each check is one Lua script, atomic.

Keys:
- `glossator:apikey:{id}:threads`: a sorted set of the chat threads the key created
  (by creation time); a thread is kept for good, so these count for good;
- `glossator:apikey:{id}:jobs`: a sorted set of the key's jobs (by creation time); a job
  stops counting once its meta says finished or cancelled;
- `glossator:rate:activations:{address}`: a token bucket (a hash: tokens, at_ms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from errors import ServiceError
from identifiers import redis_keys


class QuotaExceeded(ServiceError):
    """A key (or an anonymous address) is over its quota; the message says which, and
    what to do. `retry_after_s` is set when waiting is enough."""

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


# KEYS[1]: the key's set; ARGV: member, limit, now-ish score. {admitted, count}.
_ADD_UNDER_LIMIT = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {1, redis.call('ZCARD', KEYS[1])} end
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[2]) then return {0, n} end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return {1, n + 1}
"""
# Jobs: first drop the ones that ended (their meta has finished_at or cancelled_at, or
# is gone while older than a minute: deleted by hand), then admit under the limit.
# ARGV: job id, limit, the job meta key's prefix, its suffix.
_ADD_OPEN_JOB = """
local t = redis.call('TIME')
local now = tonumber(t[1])
local ids = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #ids, 2 do
  local meta = ARGV[3] .. ids[i] .. ARGV[4]
  local ended = redis.call('HEXISTS', meta, 'finished_at') == 1
    or redis.call('HEXISTS', meta, 'cancelled_at') == 1
    or (redis.call('EXISTS', meta) == 0 and now - tonumber(ids[i + 1]) > 60)
  if ended then redis.call('ZREM', KEYS[1], ids[i]) end
end
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[2]) then return {0, n} end
redis.call('ZADD', KEYS[1], now, ARGV[1])
return {1, n + 1}
"""
# A token bucket: ARGV: capacity, refill per second, cost. {admitted, wait_ms}.
_TAKE_TOKENS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity, rate, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or capacity)
local at = tonumber(redis.call('HGET', KEYS[1], 'at_ms') or now)
tokens = math.min(capacity, tokens + (now - at) / 1000 * rate)
local admitted = 0
local wait_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  admitted = 1
else
  wait_ms = math.ceil((cost - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at_ms', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {admitted, wait_ms}
"""


def _key_set(key_id: str, kind: str) -> str:
    return f"{redis_keys.APIKEY}:{key_id}:{kind}"


def add_thread(client: Any, key_id: str, thread_id: str, created_s: float, limit: int) -> None:
    """Count a new chat thread against the key (QuotaExceeded at `limit`)."""
    admitted, count = client.register_script(_ADD_UNDER_LIMIT)(
        keys=[_key_set(key_id, "threads")], args=[thread_id, limit, created_s]
    )
    if not admitted:
        raise QuotaExceeded(
            f"API key {key_id} already has {count} chat threads; the limit is {limit} per "
            "key (GLOSSATOR_MAX_CHAT_THREADS_PER_KEY): go on in one of them, or use another key"
        )


def threads_left(client: Any, key_id: str, limit: int) -> int:
    """How many more chat threads the key may start."""
    return max(0, limit - int(client.zcard(_key_set(key_id, "threads"))))


def add_open_job(client: Any, key_id: str, job_id: str, limit: int) -> None:
    """Count a job (about to be created) against the key's open jobs (QuotaExceeded at
    `limit`); it stops counting when it finishes or is cancelled."""
    prefix, suffix = f"{redis_keys.JOB}:", ":meta"
    admitted, count = client.register_script(_ADD_OPEN_JOB)(
        keys=[_key_set(key_id, "jobs")], args=[job_id, limit, prefix, suffix]
    )
    if not admitted:
        raise QuotaExceeded(
            f"API key {key_id} already has {count} jobs queued or running; the limit is "
            f"{limit} per key (GLOSSATOR_MAX_OPEN_JOBS_PER_KEY): wait for one to finish, "
            "or cancel one"
        )


def forget_job(client: Any, key_id: str, job_id: str) -> None:
    """Stop counting a job that was never created (its submission failed)."""
    client.zrem(_key_set(key_id, "jobs"), job_id)


@dataclass(frozen=True)
class TokenBucket:
    """`per_minute` tokens a minute, at most `per_minute` saved up, per name."""

    name: str  # e.g. "activations"
    per_minute: int

    def take(self, client: Any, who: str, cost: int) -> None:
        """Spend `cost` tokens of `who`'s bucket (a cost above the bucket spends all of
        it); QuotaExceeded with the wait when there are too few."""
        key = f"{redis_keys.ROOT}:rate:{self.name}:{who}"
        cost = min(max(1, cost), self.per_minute)
        admitted, wait_ms = client.register_script(_TAKE_TOKENS)(
            keys=[key], args=[self.per_minute, self.per_minute / 60, cost]
        )
        if not admitted:
            wait_s = max(1, math.ceil(int(wait_ms) / 1000))
            raise QuotaExceeded(
                f"too many requests without an API key from {who}: {self.per_minute} texts "
                f"a minute at most; wait {wait_s} s, or send an API key",
                retry_after_s=wait_s,
            )
