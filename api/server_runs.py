"""Agent runs over HTTP: POST /features/{feature}/runs starts (or resumes) the agent on
a feature and returns its run id at once; GET /runs/{run_id} is the run's state and
transcript (hypotheses, experiments with their activations, verdicts, explanation);
GET /runs/{run_id}/events streams its steps as Server-Sent Events.

A run is a thread of the checkpointed graph with the same id the CLI uses, so a run the
CLI started can be read here and the other way round; a run cut off by a restart is
resumed by POSTing again. Runs go on when the client disconnects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from typing import Annotated, Any, Literal

import redis
from fastapi import APIRouter, Depends, Header, HTTPException
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, JSONServerSentEvent

from agent.state import AgentState, Budget
from api.server_auth import OWNER_ONLY, ApiKey, check_owner, error_docs, read_access
from api.services import Services, services
from identifiers.redis_keys import decoded
from identifiers.runs import parse_run_id
from runtime import leases, run_events
from runtime.agent import AgentSetup
from runtime.apikeys import ApiKeyStoreError, KeyInfo, RunSlots, TooManyRuns
from runtime.run_events import RunEvent
from runtime.runs import finished, thread_namer
from runtime.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(tags=["runs"])

RunStatus = Literal["running", "finished", "interrupted", "failed"]
STOPPED = "the server stopped mid-run; POST the run again to resume it"
UNSAID = (
    "the process driving it stopped without a word (killed, or its host went away); "
    "POST the run again to resume it from its last step"
)
RECORD_TRIES = 600  # seconds to wait for Redis to come back to be told why a run ended


class RunRequest(BaseModel):
    max_rounds: int = Field(default=10, ge=1, le=50)
    max_probes: int = Field(default=60, ge=1, le=500)
    new: bool = Field(default=False, description="a fresh run instead of resuming this one")


class RunView(BaseModel):
    run_id: str
    feature: int
    name: str
    status: RunStatus
    state: AgentState | None
    error: str | None = None  # why it failed, or why it was interrupted
    owner: str | None = None  # the API key id that started it over HTTP
    events_url: str


class RunBusy(Exception):
    """Another process holds the run's lease and has gone quiet: it may be dead, or
    stuck; the run can be taken over once the lease lapses (409 with Retry-After)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, math.ceil(retry_after_s))


class RunManager:
    """The runs this process drives, as tasks that outlive the requests that began them."""

    def __init__(self, settings: Settings, setup: AgentSetup, graph: Any, client: Any) -> None:
        self.settings, self.setup, self.graph, self.client = settings, setup, graph, client
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.slots = RunSlots(client, settings.max_runs_per_key)
        self.background: set[asyncio.Task[None]] = set()  # e.g. chat turns
        # Why runs ended early, while Redis is away to be told: run id -> (kind, reason).
        self.endings: dict[str, tuple[str, str]] = {}

    def run_id(self, feature: int, budget: Budget, new: bool) -> str:
        """The CLI's and the workers' thread id for this run (so each finds the others')."""
        suffix = f":{uuid.uuid4().hex[:8]}" if new else ""
        return thread_namer(self.settings, self.setup, budget, suffix)(feature)

    async def start(self, feature: int, budget: Budget, new: bool, key: KeyInfo) -> str:
        """Start (or resume) the run; a run going here or finished is left alone, one a
        live process drives elsewhere is followed. Resuming needs the run's owner or an
        admin key (403). The run holds one of the key's run slots until it ends
        (TooManyRuns when none is free). RunBusy when a quiet process holds it."""
        run_id = self.run_id(feature, budget, new)
        running = self.tasks.get(run_id)
        if running is not None and not running.done():
            return run_id
        saved = await self._saved(run_id)
        if saved is not None and finished(saved):
            return run_id
        owner = self.client.get(run_events.owner_key(run_id))
        if owner is not None or saved is not None:  # never started: the first key owns it
            owner_id = None if owner is None else decoded(owner)
            hint = '; POST {"new": true} for a run of your own'
            check_owner(key, owner_id, f"run {run_id}", "resume", hint)
        self._take_lease(run_id)
        try:
            await asyncio.to_thread(self.slots.acquire, key.id, run_id)
        except BaseException:
            leases.release(self.client, run_events.live_key(run_id))
            raise
        self.client.set(run_events.owner_key(run_id), key.id, nx=True)
        run_events.forget_end(self.client, run_id)  # a retry of a failed or cut-off run
        self.endings.pop(run_id, None)
        start = AgentState(feature=feature, budget=budget)
        self.tasks[run_id] = asyncio.create_task(self._drive(run_id, start, key.id))
        return run_id

    def _take_lease(self, run_id: str) -> None:
        """Take the run's lease, atomically: a run that a live process drives is
        followed, never driven twice at once. FollowRun when one does, RunBusy when
        its holder went quiet."""
        key = run_events.live_key(run_id)
        standing = leases.take(self.client, key)
        if standing is None:
            return
        action, wait_s = leases.verdict(standing)
        if action == "take" and leases.take(self.client, key, replace=standing) is None:
            log.warning("run %s: took over from %s (gone)", run_id, standing.holder)
            return
        if action == "follow":
            raise FollowRun(run_id)
        raise RunBusy(
            f"run {run_id} is held by {standing.holder}, quiet for {standing.quiet_s:.0f} s "
            f"(stopped, or stuck); it can be resumed once its lease lapses: POST again in "
            f"{math.ceil(wait_s)} s",
            wait_s or leases.BEAT_S,
        )

    async def _drive(self, run_id: str, start: AgentState, key_id: str) -> None:
        from runtime.runs import drive, store_run

        def tick() -> None:
            with contextlib.suppress(ApiKeyStoreError):  # the slot expires if Redis stays away
                self.slots.refresh(key_id, run_id)

        try:
            async with run_events.live(self.client, run_id, tick) as on_state:
                final = await drive(self.graph, start, run_id, on_state)
                args = (self.settings, self.setup, final, run_id, start.budget)
                stored = await asyncio.to_thread(store_run, *args)
            explanation = final.explanation.model_dump(mode="json") if final.explanation else None
            run_events.publish(
                self.client, run_id, "done", {"explanation": explanation, "stored": stored}
            )
        except asyncio.CancelledError:  # the server stops: the checkpoint resumes it later
            with contextlib.suppress(redis.RedisError):
                run_events.record_end(self.client, run_id, "interrupted", STOPPED)
            raise
        except Exception as error:  # every failure is the run's, told to its readers
            if run_events.redis_unreachable(error):  # its checkpoint holds every step done
                reason = f"Redis became unreachable mid-run ({error}); POST again to resume it"
                self._ended(run_id, "interrupted", reason)
            else:
                log.exception("run %s failed", run_id)
                self._ended(run_id, "error", str(error) or type(error).__name__)
        finally:
            with contextlib.suppress(ApiKeyStoreError):
                self.slots.release(key_id, run_id)

    def _ended(self, run_id: str, kind: str, reason: str) -> None:
        """Record why the run ended; while Redis is away, keep trying in the background."""
        self.endings[run_id] = (kind, reason)
        try:
            run_events.record_end(self.client, run_id, kind, reason)
        except redis.RedisError:
            self.keep(asyncio.create_task(self._record_later(run_id, kind, reason)))
            return
        self.endings.pop(run_id, None)

    async def _record_later(self, run_id: str, kind: str, reason: str) -> None:
        for _ in range(RECORD_TRIES):
            await asyncio.sleep(1.0)
            if self.endings.get(run_id) != (kind, reason):  # POSTed again: no longer holds
                return
            try:
                await asyncio.to_thread(run_events.record_end, self.client, run_id, kind, reason)
            except redis.RedisError:
                continue
            self.endings.pop(run_id, None)
            return
        log.warning("run %s ended (%s) and Redis never came back to be told", run_id, reason)

    async def _saved(self, run_id: str) -> Any:
        """The run's checkpoint snapshot, or None when there is none."""
        config: Any = {"configurable": {"thread_id": run_id}}
        saved = await self.graph.aget_state(config)
        return saved if saved.values else None

    async def view(self, run_id: str) -> RunView:
        feature = _feature_of(run_id, self.setup.subject.key, self.setup.deps.store.n_features)
        try:
            return await self._view(run_id, feature)
        except Exception as error:
            ended = self.endings.get(run_id)
            if feature is None or ended is None or not run_events.redis_unreachable(error):
                raise
            # Redis is away, but this process knows why the run ended (and tells Redis
            # once it is back): its readers learn it now, not a 503 until then.
            kind, reason = ended
            status: RunStatus = "failed" if kind == "error" else "interrupted"
            return self._shown(run_id, feature, status, None, reason, None)

    async def _view(self, run_id: str, feature: int | None) -> RunView:
        saved = await self._saved(run_id) if feature is not None else None
        live = feature is not None and bool(self.client.exists(run_events.live_key(run_id)))
        # A run cut off before its first checkpoint is known by why it ended.
        ends = (run_events.error_key(run_id), run_events.interrupted_key(run_id))
        if saved is None and not live and (feature is None or not self.client.exists(*ends)):
            raise HTTPException(
                404, f"no run {run_id!r}; start one with POST /features/{{feature}}/runs"
            )
        assert feature is not None
        state = AgentState.model_validate(saved.values) if saved is not None else None
        status, error = self._status(run_id, live, saved)
        owner = self.client.get(run_events.owner_key(run_id))
        return self._shown(run_id, feature, status, state, error, owner)

    def _shown(
        self,
        run_id: str,
        feature: int,
        status: RunStatus,
        state: AgentState | None,
        error: str | None,
        owner: bytes | str | None,
    ) -> RunView:
        names = self.setup.feature_names
        return RunView(
            run_id=run_id,
            feature=feature,
            name=str(feature) if names is None else names[feature],
            status=status,
            state=state,
            error=error,
            owner=None if owner is None else decoded(owner),
            events_url=f"/runs/{run_id}/events",
        )

    def _status(self, run_id: str, live: bool, saved: Any) -> tuple[RunStatus, str | None]:
        """The run's status, and why it failed or stopped (never None when it did)."""
        if live:
            return "running", None  # perhaps before its first checkpoint
        if saved is not None and finished(saved):
            return "finished", None
        error = self.client.get(run_events.error_key(run_id))
        if error is not None:
            return "failed", decoded(error)
        said = self.client.get(run_events.interrupted_key(run_id))
        kind, reason = self.endings.get(run_id, ("interrupted", UNSAID))
        if said is None and kind == "error":
            return "failed", reason
        return "interrupted", reason if said is None else decoded(said)

    def keep(self, task: asyncio.Task[None]) -> None:
        """Hold a background task (the loop keeps only weak references) until it ends."""
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def stop(self) -> None:
        every = [*self.tasks.values(), *self.background]
        for task in every:
            task.cancel()
        for task in every:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class FollowRun(Exception):
    """A live process drives the run: the caller follows it (its view, 202)."""


def _feature_of(run_id: str, subject: str, n_features: int) -> int | None:
    """The feature a run id names, or None when it is no run of this subject's features."""
    run = parse_run_id(run_id)
    if run is None or run.subject != subject or run.feature >= n_features:
        return None
    return run.feature


@router.post(
    "/features/{feature}/runs",
    status_code=202,
    summary="Start (or resume) the agent on a feature; returns the run at once",
    responses=error_docs(e403=OWNER_ONLY, e409="a quiet process holds the run: see Retry-After"),
)
async def start_run(
    feature: str,
    svc: Annotated[Services, Depends(services)],
    key: ApiKey,
    body: RunRequest | None = None,
) -> RunView:
    body = body or RunRequest()
    index = svc.feature(feature)
    if svc.setup.deps.store.stats(index).fired_tokens == 0:
        raise HTTPException(
            404, f"feature {feature} never fired in the evidence: nothing to explain"
        )
    budget = Budget(max_rounds=body.max_rounds, max_probe_texts=body.max_probes)
    try:
        run_id = await svc.runs.start(index, budget, body.new, key)
    except FollowRun as following:
        run_id = str(following)
    except TooManyRuns as error:
        raise HTTPException(429, str(error)) from error
    except RunBusy as error:
        headers = {"Retry-After": str(error.retry_after_s)}
        raise HTTPException(409, str(error), headers=headers) from error
    return await svc.runs.view(run_id)


@router.get(
    "/runs/{run_id}",
    summary="A run's status, state and transcript",
    dependencies=[Depends(read_access)],
)
async def get_run(run_id: str, svc: Annotated[Services, Depends(services)]) -> RunView:
    return await svc.runs.view(run_id)


@router.get(
    "/runs/{run_id}/events",
    summary="The run's steps as Server-Sent Events (state, then done, error or interrupted)",
    dependencies=[Depends(read_access)],
    response_class=EventSourceResponse,
    responses=error_docs(e400="a Last-Event-ID that is no event id"),
)
async def run_events_stream(
    run_id: str,
    svc: Annotated[Services, Depends(services)],
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    try:  # checked before the 200: Redis would refuse a bad id mid-stream
        given = (last_event_id or "").strip()
        after = run_events.parse_event_id(given) if given else "0"
    except run_events.BadEventId as error:
        raise HTTPException(400, str(error)) from error
    await svc.runs.view(run_id)  # 404 before the stream starts

    async def still_going() -> RunEvent | None:
        view = await svc.runs.view(run_id)
        if view.status == "running":
            return None
        state = view.state.model_dump(mode="json") if view.state else None
        kind = {"finished": "done", "failed": "error"}.get(view.status, "interrupted")
        return RunEvent("0-0", kind, {"status": view.status, "state": state, "error": view.error})

    async def stream() -> Any:
        async for event in run_events.follow(svc.aredis, run_id, after, still_going):
            yield JSONServerSentEvent(data=event.data, event=event.type, id=event.id)

    return EventSourceResponse(stream(), ping=15)
