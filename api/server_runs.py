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
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, JSONServerSentEvent

from agent.state import AgentState, Budget
from api.server_auth import ApiKey, read_access
from api.services import Services, services
from identifiers.redis_keys import decoded
from identifiers.runs import parse_run_id
from runtime import run_events
from runtime.agent import AgentSetup
from runtime.apikeys import ApiKeyStoreError, RunSlots, TooManyRuns
from runtime.run_events import RunEvent
from runtime.runs import finished, thread_namer
from runtime.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(tags=["runs"])

RunStatus = Literal["running", "finished", "interrupted", "failed"]


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
    error: str | None = None
    events_url: str


class RunManager:
    """The runs this process drives, as tasks that outlive the requests that began them."""

    def __init__(self, settings: Settings, setup: AgentSetup, graph: Any, client: Any) -> None:
        self.settings, self.setup, self.graph, self.client = settings, setup, graph, client
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.slots = RunSlots(client, settings.max_runs_per_key)
        self.background: set[asyncio.Task[None]] = set()  # e.g. chat turns

    def run_id(self, feature: int, budget: Budget, new: bool) -> str:
        """The CLI's and the workers' thread id for this run (so each finds the others')."""
        suffix = f":{uuid.uuid4().hex[:8]}" if new else ""
        return thread_namer(self.settings, self.setup, budget, suffix)(feature)

    async def start(self, feature: int, budget: Budget, new: bool, key_id: str) -> str:
        """Start (or resume) the run; a run already going or finished is left alone.
        The run holds one of the key's run slots until it ends (TooManyRuns when none
        is free)."""
        run_id = self.run_id(feature, budget, new)
        running = self.tasks.get(run_id)
        if running is not None and not running.done():
            return run_id
        saved = await self._saved(run_id)
        if saved is not None and finished(saved):
            return run_id
        # The lease, taken atomically: a run that another server or a worker is driving
        # is followed, never driven twice at once.
        if not self.client.set(run_events.live_key(run_id), 1, ex=run_events.LEASE_S, nx=True):
            return run_id
        try:
            await asyncio.to_thread(self.slots.acquire, key_id, run_id)
        except BaseException:
            self.client.delete(run_events.live_key(run_id))
            raise
        self.client.delete(run_events.error_key(run_id))  # a retry of a failed run
        start = AgentState(feature=feature, budget=budget)
        self.tasks[run_id] = asyncio.create_task(self._drive(run_id, start, key_id))
        return run_id

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
            run_events.publish(self.client, run_id, "interrupted", {"reason": "server stopped"})
            raise
        except Exception as error:  # every failure is the run's, told to its readers
            log.exception("run %s failed", run_id)
            self.client.set(run_events.error_key(run_id), str(error), ex=run_events.KEEP_S)
            run_events.publish(self.client, run_id, "error", {"message": str(error)})
        finally:
            with contextlib.suppress(ApiKeyStoreError):
                self.slots.release(key_id, run_id)

    async def _saved(self, run_id: str) -> Any:
        """The run's checkpoint snapshot, or None when there is none."""
        config: Any = {"configurable": {"thread_id": run_id}}
        saved = await self.graph.aget_state(config)
        return saved if saved.values else None

    async def view(self, run_id: str) -> RunView:
        feature = _feature_of(run_id, self.setup.subject.key, self.setup.deps.store.n_features)
        saved = await self._saved(run_id) if feature is not None else None
        live = feature is not None and bool(self.client.exists(run_events.live_key(run_id)))
        if saved is None and not live:
            raise HTTPException(
                404, f"no run {run_id!r}; start one with POST /features/{{feature}}/runs"
            )
        assert feature is not None
        state = AgentState.model_validate(saved.values) if saved is not None else None
        error = self.client.get(run_events.error_key(run_id))
        status: RunStatus
        if live:
            status = "running"  # perhaps before its first checkpoint
        elif saved is not None and finished(saved):
            status = "finished"
        else:
            status = "failed" if error else "interrupted"
        names = self.setup.feature_names
        return RunView(
            run_id=run_id,
            feature=feature,
            name=str(feature) if names is None else names[feature],
            status=status,
            state=state,
            error=decoded(error),
            events_url=f"/runs/{run_id}/events",
        )

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
        run_id = await svc.runs.start(index, budget, body.new, key.id)
    except TooManyRuns as error:
        raise HTTPException(429, str(error)) from error
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
)
async def run_events_stream(
    run_id: str,
    svc: Annotated[Services, Depends(services)],
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    await svc.runs.view(run_id)  # 404 before the stream starts

    async def still_going() -> RunEvent | None:
        view = await svc.runs.view(run_id)
        if view.status == "running":
            return None
        state = view.state.model_dump(mode="json") if view.state else None
        kind = {"finished": "done", "failed": "error"}.get(view.status, "interrupted")
        return RunEvent("0-0", kind, {"status": view.status, "state": state, "error": view.error})

    async def stream() -> Any:
        after = last_event_id if last_event_id and _stream_id(last_event_id) else "0"
        async for event in run_events.follow(svc.aredis, run_id, after, still_going):
            yield JSONServerSentEvent(data=event.data, event=event.type, id=event.id)

    return EventSourceResponse(stream(), ping=15)


def _stream_id(text: str) -> bool:
    left, _, right = text.partition("-")
    return left.isdigit() and (right == "" or right.isdigit())
