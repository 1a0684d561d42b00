"""The Redis response cache: a rerun of the same request costs nothing.

Values are versioned pydantic models (`CachedReply`); a dead or failing Redis never
fails a call: the cache logs one warning and stays off for a cool-down, then retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any, Literal

import redis
from pydantic import BaseModel, ValidationError

from identifiers import redis_keys
from llm_client.prompting import canonical

log = logging.getLogger(__name__)

KEY_PREFIX = redis_keys.LLM_CACHE
# Bump when the key recipe or CachedReply changes: old entries are then never read.
CACHE_VERSION: Literal[1] = 1
_COOL_DOWN_S = 30.0


class CachedToken(BaseModel):
    token: str
    logprob: float
    top: dict[str, float]


class CachedReply(BaseModel):
    """One successful completion, as stored under a cache key."""

    version: Literal[1] = CACHE_VERSION
    content: str
    tokens: list[CachedToken] | None = None  # top log-probabilities, when asked for
    input_tokens: int
    output_tokens: int


def cache_key(request: dict[str, Any]) -> str:
    """`glossator:llm:cache:<sha256>` of everything that decides the answer."""
    digest = hashlib.sha256(canonical({"v": CACHE_VERSION, **request}).encode()).hexdigest()
    return KEY_PREFIX + digest


class ResponseCache:
    """A thin, failure-tolerant layer over a (sync) redis client; calls run in a worker
    thread so a slow Redis does not stall the event loop."""

    def __init__(self, client: redis.Redis | None, ttl_s: int | None) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._down_until = 0.0

    @property
    def enabled(self) -> bool:
        return self._client is not None and time.monotonic() >= self._down_until

    async def get(self, key: str) -> CachedReply | None:
        if not self.enabled:
            return None
        raw = await self._run("read", self._get, key)
        if raw is None:
            return None
        try:
            return CachedReply.model_validate_json(raw)
        except ValidationError:
            log.warning("ignoring unreadable LLM cache entry %s (old format?)", key)
            return None

    async def put(self, key: str, reply: CachedReply) -> None:
        if self.enabled:
            await self._run("write", self._set, key, reply.model_dump_json())

    def _get(self, key: str) -> Any:
        assert self._client is not None
        return self._client.get(key)

    def _set(self, key: str, value: str) -> None:
        assert self._client is not None
        self._client.set(key, value, ex=self._ttl_s)

    async def _run(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except redis.RedisError as exc:
            if time.monotonic() >= self._down_until:  # warn once per outage
                log.warning(
                    "LLM response cache %s failed (%s); continuing without the cache for "
                    "%.0f s. Check that Redis is running at the configured URL.",
                    what,
                    exc,
                    _COOL_DOWN_S,
                )
            self._down_until = time.monotonic() + _COOL_DOWN_S
            return None
