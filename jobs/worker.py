"""`glossator worker`: takes the features of explanation jobs from the subject's queue
(`jobs.queue`) and explains them, many at once.

A worker loads the model, the SAE (or the planted features) and the evidence once, and
compiles the agent graph with its Redis checkpointer once; taskiq's `Receiver` runs up
to `concurrency` messages at a time, and their probe runs share one `ProbeRunner`, so
they batch into the same forwards. Any number of workers, on any machines, may share
one Redis.

Each message is one feature of one job. Its run is named as `glossator explain` names
it (`thread_namer`; a `new` job adds its id), so a message delivered again (its worker
was killed, or Redis restarted before the ack) resumes the run's checkpoint, or finds
it finished, and `ExplanationStore.record` sees the run id again and writes nothing.
The message is acknowledged only once its outcome is in the job: explained, failed
with its reason (an LLM that kept failing, a feature that never fired, ...: never
retried), or skipped (the job was cancelled or already has it). A lost Redis
connection is waited out (up to REDIS_WAIT_S) and the run resumed from its checkpoint;
a configured Redis that is not up yet when the worker starts is waited for.

With no GLOSSATOR_REDIS_URL the worker starts (or reuses) the embedded Valkey server of
its data dir, and leaves it running when it exits, as other workers, and the commands
following the jobs, use it too; it also starts it again if it stops. A server started
this way keeps running until stopped by hand (`kill $(cat DATA_DIR/redis/redis.pid)`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

from rich.console import Console
from taskiq import AcknowledgeType, Context, TaskiqDepends
from taskiq.receiver import Receiver

from jobs.explain_jobs import JobSpec, JobStore, beat, forget_worker
from jobs.queue import CLAIM_AFTER_S, EXPLAIN_TASK, REDIS_DOWN, RETRY_S, JobBroker
from runtime import run_events
from runtime.agent import AgentSetup, agent_setup
from runtime.redis_server import (
    EmbeddedRedis,
    RedisUnavailableError,
    connect,
    embedded_server,
    redis_url,
)
from runtime.settings import Settings

log = logging.getLogger(__name__)
err_console = Console(stderr=True, soft_wrap=True)  # status lines, as the CLI prints them
T = TypeVar("T")

REDIS_WAIT_S = 600.0  # how long a run waits for a lost Redis before leaving its message


def redis_down(error: BaseException) -> bool:
    """Whether the error (or one it was raised from) is a lost Redis connection."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, REDIS_DOWN):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass
class Worker:
    settings: Settings
    setup: AgentSetup
    graph: Any  # the compiled agent graph with its checkpointer
    client: Any  # a sync redis client (job store, explanation store, heartbeat)
    broker: JobBroker
    concurrency: int
    server: EmbeddedRedis | None  # the embedded server to keep up, when no URL is set
    specs: dict[str, JobSpec] = field(default_factory=dict)  # recent jobs' specs

    @property
    def jobs(self) -> JobStore:
        return JobStore(self.client)

    async def handle(self, job_id: str, feature: int) -> None:
        """One message: begin, explain, record the outcome (each step safe to repeat)."""
        if not await self._sync(self.jobs.begin, job_id, feature):
            return  # cancelled, already finished, or no such job: acknowledged and skipped
        spec = self.specs.get(job_id)
        if spec is None:  # read once per job, not per feature: a job may list 100k
            if len(self.specs) >= 16:
                self.specs.clear()
            spec = self.specs[job_id] = await self._sync(self.jobs.spec, job_id)
        try:
            run_id = await self._patiently(lambda: self._explain(spec, job_id, feature))
        except Exception as err:
            if redis_down(err):
                raise  # Redis stayed away: leave the message for a later delivery
            if not isinstance(err, ValueError | RuntimeError):
                log.exception("feature %d of job %s failed", feature, job_id)
            reason = str(err) or type(err).__name__
            await self._sync(self.jobs.fail, job_id, feature, reason)
            return
        await self._sync(self.jobs.finish, job_id, feature, run_id)

    async def _explain(self, spec: JobSpec, job_id: str, feature: int) -> str:
        from agent.state import AgentState
        from runtime.runs import drive, store_run, thread_namer

        store = self.setup.deps.store
        if store.stats(feature).fired_tokens == 0:  # also checks the index
            raise ValueError(f"feature {feature} never fired in the evidence: nothing to explain")
        suffix = f":{job_id}" if spec.new else ""
        thread = thread_namer(self.settings, self.setup, spec.budget, suffix)(feature)
        start = AgentState(feature=feature, budget=spec.budget)
        try:
            # Live like a run the service drives: GET /runs/{thread}/events follows it.
            async with run_events.live(self.client, thread) as on_state:
                state = await drive(self.graph, start, thread, on_state)
        finally:
            self.setup.deps.forget(feature)  # a worker moves on through the dictionary
        args = (self.settings, self.setup, state, thread, spec.budget, self.client)
        stored = await asyncio.to_thread(store_run, *args)
        explanation = state.explanation.model_dump(mode="json") if state.explanation else None
        run_events.publish(
            self.client, thread, "done", {"explanation": explanation, "stored": stored}
        )
        return thread

    async def _patiently(self, step: Callable[[], Awaitable[T]]) -> T:
        """`step`, tried again while Redis is unreachable (a restart), up to REDIS_WAIT_S."""
        deadline = time.monotonic() + REDIS_WAIT_S
        while True:
            try:
                return await step()
            except Exception as err:
                if not redis_down(err) or time.monotonic() > deadline:
                    raise
                log.warning("Redis unreachable (%s); trying again in %g s", err, RETRY_S)
                await asyncio.sleep(RETRY_S)

    async def _sync(self, call: Callable[..., T], *args: Any) -> T:
        """A sync Redis call, in a thread (a slow Redis never blocks the runs), patiently."""
        return await self._patiently(lambda: asyncio.to_thread(call, *args))

    async def heartbeat(self, every_s: float) -> None:
        """Say this worker is alive (a key that expires), keep its running messages
        claimed, and restart the embedded server if it went away."""
        subject, name = self.setup.subject.key, self.broker.consumer_name
        about = {"host": socket.gethostname(), "pid": os.getpid(), "concurrency": self.concurrency}
        while True:
            try:
                if self.server is not None and not self.server.ping():
                    await asyncio.to_thread(self.server.start)
                await asyncio.to_thread(beat, self.client, subject, name, about)
                await self.broker.refresh_claims()
            except REDIS_DOWN as err:
                log.warning("heartbeat: Redis unreachable (%s)", err)
            await asyncio.sleep(every_s)


async def explain_feature(
    job_id: str, feature: int, context: Annotated[Context, TaskiqDepends()]
) -> None:
    """The taskiq task: one feature of one job. Acknowledged by hand, once its outcome is
    recorded; a task that raises (Redis gone too long, the worker stopping) is not, so
    its message goes to another delivery."""
    worker: Worker = context.state.worker
    try:
        await worker.handle(job_id, feature)
    except BaseException:
        worker.broker.release(context.message.task_id)
        raise
    await context.ack()


def run_worker(
    settings: Settings,
    planted: bool,
    spec: Path | None,
    concurrency: int,
    claim_after_s: float = CLAIM_AFTER_S,
) -> None:
    """Load the setup once, then serve the subject's queue until SIGTERM or Ctrl-C."""
    setup = agent_setup(settings, planted, spec)
    server = None if settings.redis_url else embedded_server(settings.data_dir)
    asyncio.run(serve(settings, setup, concurrency, claim_after_s, server))


async def serve(
    settings: Settings,
    setup: AgentSetup,
    concurrency: int,
    claim_after_s: float,
    server: EmbeddedRedis | None,
) -> None:
    from runtime.runs import checkpointed_graph

    broker = JobBroker(redis_url(settings), setup.subject.key, claim_after_s)
    broker.is_worker_process = True
    broker.register_task(explain_feature, task_name=EXPLAIN_TASK)
    stop = asyncio.Event()
    _on_signals(stop)
    client = await _wait_for_redis(settings, stop)
    if client is None:
        return  # stopped while waiting
    async with checkpointed_graph(settings, setup) as graph:
        worker = Worker(settings, setup, graph, client, broker, concurrency, server)
        broker.state.worker = worker
        receiver = Receiver(broker, max_async_tasks=concurrency, ack_type=AcknowledgeType.MANUAL)
        if server is not None:  # after the last connect(), which registers it again
            atexit.unregister(server.stop)  # others use the server after this worker exits
        beating = asyncio.create_task(worker.heartbeat(every_s=min(5.0, claim_after_s / 3)))
        err_console.print(
            f"worker {broker.consumer_name}: {concurrency} runs at once on {broker.queue_name}"
        )
        try:
            await receiver.listen(stop)
        finally:
            beating.cancel()
            await _leave(worker)


async def _wait_for_redis(settings: Settings, stop: asyncio.Event) -> Any | None:
    """A client of the configured Redis, once it answers: a worker started before its
    server (or during a restart) waits, saying so once, as a running one waits a restart
    out. None when stopped first. The embedded server is not waited for: it is this
    process's to start, and its error says what to fix."""
    waiting = False
    while True:
        try:
            return await asyncio.to_thread(connect, settings)
        except RedisUnavailableError as err:
            if settings.redis_url is None:
                raise
            if not waiting:
                err_console.print(f"waiting for Redis (trying every {RETRY_S:g} s): {err}")
                waiting = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RETRY_S)
        if stop.is_set():
            return None


async def _leave(worker: Worker) -> None:
    """Best effort: drop the heartbeat and the consumer, close the connections."""
    try:
        subject, name = worker.setup.subject.key, worker.broker.consumer_name
        await asyncio.to_thread(forget_worker, worker.client, subject, name)
        await worker.broker.leave()
    except REDIS_DOWN as err:
        log.warning("could not leave the queue cleanly (%s)", err)
    await worker.broker.shutdown()
    worker.client.close()


def _on_signals(stop: asyncio.Event) -> None:
    """First SIGTERM or Ctrl-C: take no new messages, finish the running ones. Second:
    stop now (their messages go to another worker; their runs resume there)."""

    def handle() -> None:
        if stop.is_set():
            os._exit(130)
        err_console.print("stopping: finishing the running features (again to stop now)")
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle)
