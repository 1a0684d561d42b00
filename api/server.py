"""The HTTP service: `create_app(settings)` builds a FastAPI app whose lifespan loads the
model, the SAE and the evidence once (in the background, so /health answers at once and
/ready says when the service can work), opens the Redis clients and compiles the agent
graph with its Redis checkpointer.

Routes live in `api/server_*.py`, one router per resource. They find what the lifespan
loaded with `services(request)` (`api/services.py`), and the auth dependencies
(`api/server_auth.py`) read `app.state.settings` and `app.state.redis`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from api.middleware import RequestBodyGuard, SecurityHeaders
from api.server_errors import ERROR_RESPONSES, add_error_handlers
from api.services import Services
from runtime.settings import Settings, get_settings

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

REDIS_RETRY_S = 1.0  # how often a service waiting for Redis tries it again


def create_app(
    settings: Settings | None = None, planted: bool = False, spec: Path | None = None
) -> FastAPI:
    """The glossator API over the configured SAE (or planted features with `planted`)."""
    from api.server_activations import router as activations_router
    from api.server_bench import router as bench_router
    from api.server_chat import router as chat_router
    from api.server_features import router as features_router
    from api.server_jobs import router as jobs_router
    from api.server_runs import router as runs_router
    from api.server_steer import router as steer_router
    from api.server_web import add_web

    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.redis = _client(settings)  # connects on first use: Redis may be down yet
        app.state.services = None
        app.state.load_error = None
        async with contextlib.AsyncExitStack() as stack:
            loading = asyncio.create_task(_load(app, stack, settings, planted, spec))
            try:
                yield
            finally:
                loading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await loading
                if app.state.services is not None:
                    await app.state.services.runs.stop()
        app.state.redis.close()

    # fastapi-offline: the /docs and /redoc pages load their scripts from this server, not a
    # CDN, so they work offline like the rest.
    app = FastAPIOffline(
        title="glossator",
        version="0.1.0",
        description="Explanations of sparse-autoencoder features: evidence, activations, "
        "agent runs, chat, batch jobs and benchmarks.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    add_error_handlers(app)
    for stored in _store_errors():
        app.add_exception_handler(stored, _store_failed)
    app.add_exception_handler(redis.RedisError, _redis_down)
    _add_health_routes(app)
    routers = (
        features_router,
        activations_router,
        steer_router,
        runs_router,
        chat_router,
        jobs_router,
        bench_router,
    )
    for router in routers:
        app.include_router(router)
    add_web(app)
    # Outermost last: the headers go on every answer, the guard's 413s and 422s included.
    app.add_middleware(RequestBodyGuard, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    return app


async def _load(
    app: FastAPI,
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    planted: bool,
    spec: Path | None,
) -> None:
    """Wait for Redis, then load the services; a load that Redis failed is tried again
    when it answers, any other failure is kept for /ready to report."""
    while True:
        await _wait_for_redis(app, settings)
        try:
            async with contextlib.AsyncExitStack() as attempt:
                loaded = await _services(app, attempt, settings, planted, spec)
                stack.push_async_exit(attempt.pop_all())  # kept open until shutdown
        except Exception as error:
            if not _unreachable(error):  # /ready reports it; the process stays up to say so
                log.exception("loading the service failed")
                app.state.load_error = str(error)
                return
            log.warning("Redis went away while loading; waiting for it: %s", error)
            await asyncio.sleep(REDIS_RETRY_S)
            continue
        app.state.services, app.state.load_error = loaded, None
        log.info("glossator service ready: %s", loaded.setup.subject)
        return


async def _services(
    app: FastAPI,
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    planted: bool,
    spec: Path | None,
) -> Services:
    """Load model, SAE and evidence off the event loop, then the checkpointed graph."""
    from redis.asyncio import from_url

    from agent.checkpointer import async_redis_checkpointer
    from agent.graph import build_graph
    from api.server_runs import RunManager
    from runtime.agent import agent_setup
    from runtime.redis_server import redis_url

    setup = await asyncio.to_thread(agent_setup, settings, planted, spec)
    stack.push_async_callback(setup.deps.aclose)
    url = redis_url(settings)
    saver = await stack.enter_async_context(async_redis_checkpointer(url))
    graph = build_graph(setup.deps).compile(checkpointer=saver)
    aredis = from_url(url, socket_timeout=60)  # above the SSE reads' XREAD BLOCK
    stack.push_async_callback(aredis.aclose)
    runs = RunManager(settings, setup, graph, app.state.redis)
    return Services(setup, graph, runs, aredis)


def _client(settings: Settings) -> redis.Redis:
    """A client of the configured (or the embedded) server that connects when first used,
    so the service starts while Redis is down and its routes answer 503 until it is up."""
    from runtime.redis_server import EmbeddedRedis

    url = settings.redis_url or EmbeddedRedis(settings.data_dir).url
    return redis.Redis.from_url(url, socket_connect_timeout=5.0)


async def _wait_for_redis(app: FastAPI, settings: Settings) -> None:
    """Until Redis answers (the embedded server started if it is the one), with /ready
    saying why the service is waiting."""
    from runtime.redis_server import RedisUnavailableError, connect

    waited = False
    while True:
        try:
            probe = await asyncio.to_thread(connect, settings)
        except RedisUnavailableError as error:
            if not waited:
                log.warning("waiting for Redis (/ready answers 503 until it is up): %s", error)
            waited = True
            app.state.load_error = f"waiting for Redis: {error}"
            await asyncio.sleep(REDIS_RETRY_S)
            continue
        probe.close()
        if waited:
            log.info("Redis is up")
        app.state.load_error = None
        return


def _unreachable(error: BaseException) -> bool:
    """Whether `error` (or what caused it) says Redis could not be reached."""
    from runtime.redis_server import RedisUnavailableError

    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, redis.ConnectionError | RedisUnavailableError | ConnectionError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _add_health_routes(app: FastAPI) -> None:
    @app.get("/health", tags=["service"], summary="The process is up")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["service"],
        summary="Model, SAE and evidence are loaded and Redis answers",
    )
    def ready(request: Request) -> JSONResponse:
        state = request.app.state
        if state.services is None:
            why = state.load_error or "loading the model and evidence"
            return JSONResponse({"status": "not ready", "detail": why}, status_code=503)
        try:
            state.redis.ping()
        except redis.RedisError as error:
            return JSONResponse(
                {"status": "not ready", "detail": f"Redis does not answer: {error}"},
                status_code=503,
            )
        loaded: Services = state.services
        store = loaded.setup.deps.store
        return JSONResponse(
            {
                "status": "ready",
                "subject": loaded.setup.subject.model_dump(),
                "evidence": store.manifest.evidence_id,
                "features": store.n_features,
                "reasoner": loaded.setup.deps.reasoner.name,
            }
        )


def _store_errors() -> tuple[type[Exception], ...]:
    """The errors our Redis-backed stores raise: an unreachable server, or a malformed
    value (their messages say which, and what to do)."""
    from agent.chat import ChatStoreError
    from agent.explanations import ExplanationStoreError
    from runtime.apikeys import ApiKeyStoreError
    from runtime.redis_server import RedisUnavailableError

    return (ExplanationStoreError, ChatStoreError, ApiKeyStoreError, RedisUnavailableError)


async def _store_failed(request: Request, error: Exception) -> JSONResponse:
    """503 when Redis is unreachable (try again later); 500 for a malformed stored value."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, redis.RedisError | OSError):
        cause = cause.__cause__ or cause.__context__
    unreachable = cause is not None or "unreachable" in str(error).lower()
    return JSONResponse({"detail": str(error)}, status_code=503 if unreachable else 500)


async def _redis_down(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": f"Redis is unavailable, nothing was changed: {error}"}, status_code=503
    )
