"""FastAPI dependencies for API keys, and the request limits, for the HTTP routes.

Contract with the app: `request.app.state.settings` is the `Settings` and
`request.app.state.redis` a sync `redis.Redis` client, both set before the first request
(e.g. in the lifespan). Routes that write or spend (explain, chat, jobs, bench) take
`ApiKey`; routes that read take `ReadAccess`, open unless `settings.read_requires_key`.
Errors are HTTPExceptions, so clients get `{"detail": "<message>"}`:
401 (with `WWW-Authenticate: Bearer`) for a missing, malformed, unknown or revoked key,
403 when a key changes (cancels, writes into, resumes) a job, chat thread, run or
benchmark that is not its own and it is no admin key, 413/422 for a request over a
limit or empty, 429 when the key has too many runs or is over a quota (and for
anonymous callers over their rate, with Retry-After), and 503 when Redis is unreachable.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

import redis
from fastapi import Depends, HTTPException, Request

from api.server_errors import ErrorBody
from runtime.apikeys import (
    ApiKeyStore,
    ApiKeyStoreError,
    InvalidApiKey,
    KeyInfo,
    RunSlots,
    TooManyRuns,
)
from runtime.quotas import QuotaExceeded, TokenBucket
from runtime.settings import Settings

log = logging.getLogger(__name__)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_HOW = (
    "send 'Authorization: Bearer <token>' or 'X-API-Key: <token>' "
    "(create a key with `glossator apikey create NAME`)"
)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _redis(request: Request) -> Any:
    return request.app.state.redis


def _presented_token(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(
                401,
                f"the Authorization header must be 'Bearer <token>'; {_HOW}",
                headers=_CHALLENGE,
            )
        return token.strip()
    api_key = request.headers.get("x-api-key")
    return api_key.strip() if api_key is not None and api_key.strip() else None


# Plain `def`: FastAPI runs it in its thread pool, so the sync Redis call never blocks
# the event loop.
def require_key(request: Request) -> KeyInfo:
    """The caller's verified key; 401 when it is missing, malformed, unknown or revoked."""
    token = _presented_token(request)
    if token is None:
        raise HTTPException(401, f"this endpoint needs an API key: {_HOW}", headers=_CHALLENGE)
    try:
        return ApiKeyStore(_redis(request)).verify(token)
    except InvalidApiKey as error:
        raise HTTPException(401, str(error), headers=_CHALLENGE) from error
    except ApiKeyStoreError as error:
        raise HTTPException(503, str(error)) from error


def read_access(request: Request) -> KeyInfo | None:
    """None when reads are open (the default), else the caller's verified key."""
    if not _settings(request).read_requires_key:
        return None
    return require_key(request)


def optional_key(request: Request) -> KeyInfo | None:
    """The caller's verified key when one is sent (401 for a bad one), else None."""
    if request.headers.get("authorization") is None and request.headers.get("x-api-key") is None:
        return None
    return require_key(request)


ApiKey = Annotated[KeyInfo, Depends(require_key)]
ReadAccess = Annotated[KeyInfo | None, Depends(read_access)]


def may_change(key: KeyInfo, owner: str | None) -> bool:
    """Whether `key` may change a thing `owner` (a key id) made. A thing with no owner
    was made before owners were recorded, or by the CLI or a worker (no key): only an
    admin key may change it."""
    return key.admin or (owner is not None and owner == key.id)


def error_docs(**codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for a route's own error codes: `error_docs(e403="why")`."""
    return {int(code[1:]): {"model": ErrorBody, "description": why} for code, why in codes.items()}


OWNER_ONLY = "the thing belongs to another API key (or predates owners): owner or admin only"


def check_owner(key: KeyInfo, owner: str | None, what: str, action: str, hint: str = "") -> None:
    """403 unless `key` owns `what` or is an admin key. Reads are not checked here:
    who made what is no secret (reads are open, or open to every key), so a 404 would
    hide nothing."""
    if may_change(key, owner):
        return
    whose = (
        f"API key {owner}"
        if owner is not None
        else "no API key (it was made before owners were recorded, or by the CLI or a worker)"
    )
    raise HTTPException(
        403,
        f"{what} belongs to {whose}; only its owner or an admin key "
        f"(`glossator apikey create --admin`) may {action} it{hint}",
    )


def quota_error(error: QuotaExceeded) -> HTTPException:
    """429, with Retry-After when waiting is enough."""
    headers = None if error.retry_after_s is None else {"Retry-After": str(error.retry_after_s)}
    return HTTPException(429, str(error), headers=headers)


def limit_anonymous(request: Request, key: KeyInfo | None, cost: int) -> None:
    """Spend `cost` of the anonymous caller's token bucket (per client address); keyed
    callers are not limited here (their runs and quotas are). 429 with Retry-After."""
    if key is not None:
        return
    address = request.client.host if request.client is not None else "unknown"
    bucket = TokenBucket("activations", _settings(request).anonymous_texts_per_minute)
    try:
        bucket.take(_redis(request), address, cost)
    except QuotaExceeded as error:
        raise quota_error(error) from error
    except redis.RedisError as error:  # the limit guards CPU; Redis down must not stop
        log.warning("anonymous rate limit not checked (Redis: %s)", error)  # the model


@asynccontextmanager
async def run_slot(request: Request, key: KeyInfo, run_id: str) -> AsyncIterator[None]:
    """Hold one of `key`'s run slots (settings.max_runs_per_key) for the block; 429 when
    none is free, 503 when Redis is unreachable."""
    slots = RunSlots(_redis(request), _settings(request).max_runs_per_key)
    try:
        async with slots.hold(key.id, run_id):
            yield
    except TooManyRuns as error:
        raise HTTPException(429, str(error)) from error
    except ApiKeyStoreError as error:
        raise HTTPException(503, str(error)) from error


def check_texts(texts: Sequence[str], settings: Settings) -> None:
    """422 for no texts or an empty one, 413 for too many texts or a text too long."""
    if not texts:
        raise HTTPException(422, "no texts given; send at least one")
    if len(texts) > settings.max_texts_per_request:
        raise HTTPException(
            413,
            f"{len(texts)} texts in one request; the limit is {settings.max_texts_per_request} "
            "(GLOSSATOR_MAX_TEXTS_PER_REQUEST): split them over several requests",
        )
    for index, text in enumerate(texts):
        if not text.strip():
            raise HTTPException(422, f"text {index} is empty")
        if len(text) > settings.max_text_chars:
            raise HTTPException(
                413,
                f"text {index} has {len(text):,} characters; the limit is "
                f"{settings.max_text_chars:,} per text (GLOSSATOR_MAX_TEXT_CHARS)",
            )


def check_feature_count(n: int, settings: Settings) -> None:
    """422 for no features, 413 for more than settings.max_features_per_job."""
    if n < 1:
        raise HTTPException(422, "no features given; name at least one")
    if n > settings.max_features_per_job:
        raise HTTPException(
            413,
            f"{n:,} features in one job; the limit is {settings.max_features_per_job:,} "
            "(GLOSSATOR_MAX_FEATURES_PER_JOB): split the job",
        )
