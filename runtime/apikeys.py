"""API keys for the HTTP service, and the per-key limit on concurrent runs, in Redis.

A token is `glsk_<key id>_<secret>`; it is shown once, at creation. Only its SHA-256 is
stored: the secret is 32 random bytes, so a fast hash is enough (a slow password hash
protects low-entropy secrets, which these are not).

Keys (values are versioned pydantic JSON):
- `glossator:apikey:{id}`: a hash; field `record` = the `KeyRecord`, field
  `last_used_at` = ISO time (its own field, so a verify never rewrites the record);
- `glossator:apikey:ids`: a sorted set of every key id (revoked ones too), by creation;
- `glossator:apikey:names`: a hash, name -> id of the *active* key with that name;
- `glossator:apikey:{id}:runs`: the key's run slots (`RunSlots`).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import BaseModel, ValidationError

from errors import ServiceError, UserError
from identifiers import redis_keys
from identifiers.redis_keys import decoded

log = logging.getLogger(__name__)

RECORD_VERSION = 1
PREFIX = redis_keys.APIKEY
IDS_KEY = f"{PREFIX}:ids"
NAMES_KEY = f"{PREFIX}:names"
TOKEN_PREFIX = "glsk"
_ID_RE = re.compile(r"[0-9a-f]{16}")
_TOKEN_RE = re.compile(rf"{TOKEN_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{32,128}})")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
SECRET_BYTES = 32


class ApiKeyError(ServiceError):
    """A key operation cannot be done; the message says why and what to do."""


class InvalidApiKey(ApiKeyError):
    """A presented token is malformed, unknown, wrong or revoked (never echoes it)."""


class ApiKeyStoreError(ApiKeyError):
    """Redis is unreachable or holds a malformed key record."""


class TooManyRuns(ApiKeyError):
    """The key already has its limit of runs in progress."""


class KeyRecord(BaseModel):
    """What is stored per key; never the token itself."""

    version: int = RECORD_VERSION
    id: str
    name: str
    token_sha256: str
    created_at: datetime
    revoked_at: datetime | None = None
    # Acts on every key's jobs, chat threads, runs and bench runs, and on those made
    # before owners were recorded. Records written before the flag existed read as False.
    admin: bool = False


class KeyInfo(BaseModel):
    """What may be shown about a key: no token, no hash."""

    id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    admin: bool = False

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _where(client: Any) -> str:
    """The client's server, for messages; built from its pool so no password can leak."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


@contextmanager
def _redis_errors(client: Any) -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise ApiKeyStoreError(
            f"Redis is unreachable at {_where(client)} ({error}), so API keys cannot be "
            "checked; is the server running, and is GLOSSATOR_REDIS_URL right?"
        ) from error


class ApiKeyStore:
    """API keys in Redis. `client` is a sync redis client (bytes or str responses)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def create(self, name: str, admin: bool = False) -> tuple[KeyInfo, str]:
        """A new key named `name` and its token (shown once; only its hash is kept);
        `admin` keys may act on every key's things."""
        if not _NAME_RE.fullmatch(name) or _ID_RE.fullmatch(name):
            raise ApiKeyError(
                f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', "
                "starting with a letter or digit (and not 16 hex digits, which look like a key id)"
            )
        key_id = secrets.token_hex(8)
        token = f"{TOKEN_PREFIX}_{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
        record = KeyRecord(
            id=key_id,
            name=name,
            token_sha256=_sha256(token),
            created_at=datetime.now(UTC),
            admin=admin,
        )

        def write(pipe: Any) -> None:
            if pipe.hexists(NAMES_KEY, name):
                raise ApiKeyError(
                    f"an active key is already named {name!r}; revoke it first, or pick "
                    "another name"
                )
            if pipe.exists(_record_key(key_id)):  # 64 random bits: practically never
                raise ApiKeyStoreError(f"key id {key_id} is taken; run the command again")
            pipe.multi()
            pipe.hset(NAMES_KEY, name, key_id)
            pipe.hset(_record_key(key_id), "record", record.model_dump_json())
            pipe.zadd(IDS_KEY, {key_id: record.created_at.timestamp()})

        with _redis_errors(self.client):
            # WATCH the names: of two creates with one name, exactly one commits.
            self.client.transaction(write, NAMES_KEY, _record_key(key_id))
        return _info(record, None), token

    def verify(self, token: str) -> KeyInfo:
        """The key `token` belongs to, with last_used_at updated; InvalidApiKey otherwise."""
        match = _TOKEN_RE.fullmatch(token)
        if match is None:
            raise InvalidApiKey(
                f"malformed API key: expected {TOKEN_PREFIX}_<16 hex digits>_<secret>, as "
                "printed by `glossator apikey create`"
            )
        key_id = match.group(1)
        with _redis_errors(self.client):
            fields = self.client.hgetall(_record_key(key_id))
            record = self._record(fields, key_id)
            # Constant-time compare, so response timing says nothing about the hash.
            if record is None or not hmac.compare_digest(record.token_sha256, _sha256(token)):
                raise InvalidApiKey(f"unknown API key {key_id} (or a wrong secret for it)")
            if record.revoked_at is not None:
                raise InvalidApiKey(
                    f"API key {key_id} ({record.name}) was revoked at "
                    f"{record.revoked_at:%Y-%m-%d %H:%M:%S} UTC; create a new one"
                )
            now = datetime.now(UTC)
            self.client.hset(_record_key(key_id), "last_used_at", now.isoformat())
        return _info(record, now)

    def revoke(self, key_id_or_name: str) -> KeyInfo:
        """Revoke a key by id or (active) name; revoking a revoked key changes nothing."""
        with _redis_errors(self.client):
            key_id = self._resolve(key_id_or_name)
            key = _record_key(key_id)

            def write(pipe: Any) -> KeyRecord:
                record = self._record(pipe.hgetall(key), key_id)
                assert record is not None  # _resolve found it, and records are never deleted
                if record.revoked_at is not None:
                    return record
                holder = pipe.hget(NAMES_KEY, record.name)
                record.revoked_at = datetime.now(UTC)
                pipe.multi()
                pipe.hset(key, "record", record.model_dump_json())
                if holder is not None and decoded(holder) == key_id:
                    pipe.hdel(NAMES_KEY, record.name)  # the name is free for a new key
                return record

            record = self.client.transaction(write, key, NAMES_KEY, value_from_callable=True)
            last_used = self.client.hget(key, "last_used_at")
        return _info(record, _time(last_used))

    def list(self) -> builtins.list[KeyInfo]:
        """Every key, revoked ones too, oldest first."""
        with _redis_errors(self.client):
            ids = [decoded(i) for i in self.client.zrange(IDS_KEY, 0, -1)]
            pipe = self.client.pipeline(transaction=False)
            for key_id in ids:
                pipe.hgetall(_record_key(key_id))
            rows = pipe.execute()
        infos = []
        for key_id, fields in zip(ids, rows, strict=True):
            record = self._record(fields, key_id)
            if record is not None:
                infos.append(_info(record, _time(_field(fields, "last_used_at"))))
        return infos

    def _resolve(self, key_id_or_name: str) -> str:
        if _ID_RE.fullmatch(key_id_or_name) and self.client.exists(_record_key(key_id_or_name)):
            return key_id_or_name
        key_id = self.client.hget(NAMES_KEY, key_id_or_name)
        if key_id is None:
            raise ApiKeyError(
                f"no API key with id or active name {key_id_or_name!r}; "
                "`glossator apikey list` shows them"
            )
        return decoded(key_id)

    @staticmethod
    def _record(fields: dict[Any, Any], key_id: str) -> KeyRecord | None:
        raw = _field(fields, "record")
        if raw is None:
            return None
        try:
            record = KeyRecord.model_validate_json(raw)
        except ValidationError as error:
            raise ApiKeyStoreError(
                f"the API key record at {_record_key(key_id)} is malformed "
                f"({error.errors()[0]['msg']}); delete it and create a new key"
            ) from None
        if record.version != RECORD_VERSION:
            raise ApiKeyStoreError(
                f"the API key record at {_record_key(key_id)} has version {record.version}, "
                f"this glossator reads version {RECORD_VERSION}"
            )
        return record


def _record_key(key_id: str) -> str:
    return f"{PREFIX}:{key_id}"


def _field(fields: dict[Any, Any], name: str) -> Any:
    return fields.get(name, fields.get(name.encode()))


def _time(raw: Any) -> datetime | None:
    return None if raw is None else datetime.fromisoformat(decoded(raw))


def _info(record: KeyRecord, last_used_at: datetime | None) -> KeyInfo:
    return KeyInfo(
        id=record.id,
        name=record.name,
        created_at=record.created_at,
        revoked_at=record.revoked_at,
        last_used_at=last_used_at,
        admin=record.admin,
    )


# Server time (TIME), so processes with skewed clocks agree on which slots have expired.
# KEYS[1]: the key's run set; ARGV: run id, limit, ttl in ms. Returns {admitted, live runs}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZCARD', KEYS[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if live >= tonumber(ARGV[2]) then return {0, live} end
  live = live + 1
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, live}
"""
# Pushes a held slot's expiry; returns 1 when the slot had expired and was re-added.
_REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return added
"""


class RunSlots:
    """At most `limit` concurrent runs per key, across processes: a sorted set of run ids
    scored by expiry time. A holder refreshes its slot every ttl/3; a crashed holder's slot
    expires after `ttl_s` and is reclaimed by the next acquire. Run ids must be unique."""

    def __init__(self, client: Any, limit: int, *, ttl_s: float = 60.0) -> None:
        if limit < 1 or ttl_s <= 0:
            raise UserError(f"limit must be >= 1 and ttl_s > 0, got {limit} and {ttl_s}")
        self.client = client
        self.limit = limit
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self._acquire = client.register_script(_ACQUIRE)
        self._refresh = client.register_script(_REFRESH)

    def acquire(self, key_id: str, run_id: str) -> int:
        """Take a slot for `run_id` (a no-op refresh if it holds one); the live run count.
        Raises TooManyRuns at the limit. Prefer `hold`, which refreshes and releases."""
        with _redis_errors(self.client):
            admitted, live = self._acquire(
                keys=[_runs_key(key_id)], args=[run_id, self.limit, self.ttl_ms]
            )
        if not admitted:
            raise TooManyRuns(
                f"API key {key_id} already has {live} runs in progress; the limit is "
                f"{self.limit} at once per key (GLOSSATOR_MAX_RUNS_PER_KEY): wait for one "
                "to finish"
            )
        return int(live)

    def refresh(self, key_id: str, run_id: str) -> None:
        with _redis_errors(self.client):
            readded = self._refresh(keys=[_runs_key(key_id)], args=[run_id, self.ttl_ms])
        if readded:
            log.warning("run %s of key %s had lost its slot (stalled?); re-added", run_id, key_id)

    def release(self, key_id: str, run_id: str) -> None:
        with _redis_errors(self.client):
            self.client.zrem(_runs_key(key_id), run_id)

    def running(self, key_id: str) -> list[str]:
        """The run ids holding a live slot of `key_id` (expired ones not counted)."""
        with _redis_errors(self.client):
            now_s, now_us = self.client.time()
            now_ms = now_s * 1000 + now_us // 1000
            return [
                decoded(r) for r in self.client.zrangebyscore(_runs_key(key_id), now_ms, "+inf")
            ]

    @asynccontextmanager
    async def hold(self, key_id: str, run_id: str) -> AsyncIterator[None]:
        """Hold a slot for the block (TooManyRuns if none is free), refreshed meanwhile.
        The sync client runs in a thread, so the event loop never waits on Redis."""
        await asyncio.to_thread(self.acquire, key_id, run_id)
        heartbeat = asyncio.create_task(self._heartbeat(key_id, run_id))
        try:
            yield
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            try:
                await asyncio.to_thread(self.release, key_id, run_id)
            except ApiKeyStoreError as error:  # the slot expires by itself; keep the run's
                log.warning("could not release run %s's slot: %s", run_id, error)  # outcome

    async def _heartbeat(self, key_id: str, run_id: str) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            try:
                await asyncio.to_thread(self.refresh, key_id, run_id)
            except ApiKeyStoreError as error:  # Redis may come back before the slot expires
                log.warning("could not refresh run %s's slot: %s", run_id, error)


def _runs_key(key_id: str) -> str:
    return f"{PREFIX}:{key_id}:runs"
