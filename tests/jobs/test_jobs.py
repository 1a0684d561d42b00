"""Batch jobs on the queue, end to end: real `glossator worker` processes, a real Valkey
server of this module's own (so it can be restarted), planted features whose evidence
the CLI builds. Workers are SIGKILLed and Redis restarted mid-job; every feature must
still end with exactly one stored run, and the job's counts must add up."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from agent.explanations import ExplanationStore
from agent.state import Budget
from jobs.explain_jobs import (
    MAX_STARTS,
    JobSpec,
    JobStatus,
    JobStore,
    UnknownJobError,
    live_workers,
    submit_explain_job,
)
from jobs.queue import GROUP, queue_name
from runtime.agent import AgentSetup, agent_setup
from runtime.redis_server import EmbeddedRedis
from runtime.settings import Settings, get_settings
from tests.cli.test_explain import PHRASES
from tests.cli_helpers import GLOSSATOR, planted_cli_env

pytestmark = pytest.mark.slow  # real worker processes on the real default model

# With PHRASES, these make every one of the 25 planted features fire somewhere.
MORE_PHRASES = [
    "the history of science is long",
    "of course we never stop at least once",
    'she said "hello there" to the FBI',
    "def add(a, b): return None if a else True",
    "call __init__ and __name__ in the Unix shell",
    "it takes 42 minutes (at most) near Paris",
    "-- Mark Twain, a letter",
    "is it really so?",
]
BUDGET = Budget(max_rounds=2, max_probe_texts=24)  # small runs: the queue is under test
RUNS_AT_ONCE = 4
# A killed worker's features move on after 3 s (the default is 60).
WORKER = [
    GLOSSATOR,
    "worker",
    "--planted",
    "--concurrency",
    str(RUNS_AT_ONCE),
    "--claim-after",
    "3",
]


class Cluster:
    """The module's Redis, planted evidence, settings, and its worker processes."""

    def __init__(self, root: Path, server: EmbeddedRedis, env: dict[str, str]) -> None:
        self.root, self.server, self.env = root, server, env
        self.settings: Settings = get_settings(
            data_dir=env["GLOSSATOR_DATA_DIR"],
            redis_url=env["GLOSSATOR_REDIS_URL"],
            model=env["GLOSSATOR_MODEL"],
            device="cpu",
        )
        self.setup: AgentSetup = agent_setup(self.settings, planted=True)
        self.client = server.client(decode_responses=True)
        self.jobs = JobStore(self.client)
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_workers(self, count: int) -> None:
        """Start `count` more workers and wait until each has a heartbeat."""
        before = len(self.live())
        for _ in range(count):
            log = (self.root / f"worker-{len(self.workers)}.log").open("wb")
            self.workers.append(
                subprocess.Popen(
                    WORKER,
                    env={**os.environ, **self.env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        wait_for(lambda: len(self.live()) >= before + count, 120, "the workers to start")

    def live(self) -> dict[str, int]:
        """consumer name -> pid, of the workers with a fresh heartbeat."""
        workers = live_workers(self.client, self.setup.subject.key)
        return {name: about["pid"] for name, about in workers.items()}

    def submit(self, features: list[int]) -> JobStatus:
        return asyncio.run(
            submit_explain_job(self.settings, self.setup, features, BUDGET, new=True)
        )

    def wait_finished(self, job_id: str, timeout_s: float = 150) -> JobStatus:
        def finished() -> bool:
            try:
                return self.jobs.status(job_id).state not in ("queued", "running")
            except redis.ConnectionError:
                return False  # Redis restarting

        wait_for(finished, timeout_s, f"job {job_id} to finish")
        return self.jobs.status(job_id)

    def assert_explained_once(self, job_id: str, features: list[int]) -> None:
        """Each feature has exactly one stored run of this job, the one the job names."""
        store = ExplanationStore(self.client, self.setup.subject)
        runs = self.jobs.runs(job_id)
        assert sorted(runs) == sorted(features)
        for feature in features:
            mine = [r for r in store.history(feature) if r.run_id.endswith(f":{job_id}")]
            assert [r.run_id for r in mine] == [runs[feature]], feature

    def queue_is_empty(self) -> bool:
        """Every message of the subject's queue was acknowledged (and deleted)."""
        queue = queue_name(self.setup.subject.key)
        return self.client.xlen(queue) == 0 and self.client.xpending(queue, GROUP)["pending"] == 0

    def stop_workers(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("jobs")
    server = EmbeddedRedis(root / "redis-data")
    server.start()
    rng = random.Random(3)
    phrases = PHRASES + MORE_PHRASES
    texts = [
        "\n".join(". ".join(rng.sample(phrases, 3)) for _ in range(rng.randint(1, 3)))
        for _ in range(400)
    ]
    env = planted_cli_env(root, smollm2_tokenizer, server.url, texts)
    cluster = Cluster(root, server, env)
    yield cluster
    cluster.stop_workers()
    server.stop()


def firing(cluster: Cluster) -> list[int]:
    store = cluster.setup.deps.store
    return store.firing_features()


def test_the_cli_queues_a_job_and_follows_it_to_the_table(cluster: Cluster) -> None:
    # Queued before any worker exists: the CLI warns, and waits; the first worker to
    # start takes the job (its messages were not skipped for predating the workers).
    errors = (cluster.root / "cli.err").open("w+")
    cli = subprocess.Popen(
        [GLOSSATOR, "explain", "--planted", "--features", "0,1,2", "--max-rounds", "2"],
        env={**os.environ, **cluster.env, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    wait_for(lambda: "no worker is listening" in Path(errors.name).read_text(), 60, "a warning")
    cluster.start_workers(2)
    out, _ = cli.communicate(timeout=120)
    assert cli.returncode == 0, Path(errors.name).read_text()
    assert "3 features explained" in out
    for name in ("word-love", "word-computer", "colour-words"):
        assert name in out
    assert "love" in out and "computer" in out and "red" in out


def test_a_worker_killed_mid_job_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    features = firing(cluster)
    assert len(features) == 25  # the corpus makes every planted feature fire
    if len(cluster.live()) < 2:
        cluster.start_workers(2 - len(cluster.live()))
    job = cluster.submit(features)
    queue = queue_name(cluster.setup.subject.key)

    def victim() -> int | None:  # a worker in the middle of some features
        if cluster.jobs.status(job.id).done < 3:
            return None
        for name, pid in cluster.live().items():
            held = cluster.client.xpending_range(queue, GROUP, "-", "+", 10, consumername=name)
            if held:
                return pid
        return None

    wait_for(lambda: victim() is not None, 120, "a worker busy mid-job")
    pid = victim()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    status = cluster.wait_finished(job.id)
    assert status.state == "done" and status.failed == {}
    assert status.done == status.total == 25 and status.pending == 0
    cluster.assert_explained_once(job.id, features)
    starts = cluster.client.hgetall(JobStore.key(job.id, "starts"))
    assert max(map(int, starts.values())) >= 2  # the killed worker's features ran again
    assert cluster.queue_is_empty()


def test_a_redis_restart_mid_job_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    features = firing(cluster)[:12]
    if not cluster.live():
        cluster.start_workers(1)
    job = cluster.submit(features)
    wait_for(lambda: cluster.jobs.status(job.id).done >= 2, 120, "the job to be under way")
    cluster.server.stop()  # mid-job: runs in flight, messages pending
    time.sleep(1.0)
    cluster.server.start()
    status = cluster.wait_finished(job.id)
    assert status.state == "done" and status.failed == {}
    assert status.done == status.total == len(features)
    cluster.assert_explained_once(job.id, features)
    assert cluster.queue_is_empty()


def test_a_cancelled_job_stops_and_unknown_jobs_are_refused(cluster: Cluster) -> None:
    if not cluster.live():
        cluster.start_workers(1)
    job = cluster.submit(firing(cluster))
    wait_for(lambda: cluster.jobs.status(job.id).done >= 1, 120, "the job to be under way")
    cancelled = cluster.jobs.cancel(job.id)
    assert cancelled.state == "cancelled" and cancelled.finished_at is not None
    # The rest of its messages are taken, acknowledged and skipped; runs already going
    # finish (RUNS_AT_ONCE per worker at most).
    wait_for(cluster.queue_is_empty, 60, "the cancelled job's messages to be skipped")
    final = cluster.jobs.status(job.id)
    assert final.state == "cancelled"
    assert final.done <= cancelled.done + RUNS_AT_ONCE * len(cluster.live())
    assert final.done < final.total and final.pending > 0
    assert cluster.jobs.cancel(job.id).state == "cancelled"  # again: no change
    assert [j.id for j in cluster.jobs.list(limit=1)] == [job.id]
    with pytest.raises(UnknownJobError, match="no job 'nope'"):
        cluster.jobs.status("nope")
    with pytest.raises(UnknownJobError):
        cluster.jobs.cancel("nope")


def test_a_run_killed_after_its_first_checkpoint_starts_again(cluster: Cluster) -> None:
    """Killed between its input checkpoint and its first step's (the window a SIGKILLed
    worker left for a redelivered feature): the checkpoint shows values and no next
    node, and `drive` must run the feature, not return it unexplained."""
    from agent.checkpointer import AsyncGlossatorRedisSaver, async_redis_checkpointer
    from agent.graph import build_graph
    from agent.state import AgentState
    from runtime.runs import drive

    thread, deps = f"test-first-checkpoint-{time.time_ns()}", cluster.setup.deps
    start = AgentState(feature=0, budget=BUDGET)

    async def main() -> tuple[Any, AgentState]:
        wrote, stalled = asyncio.Event(), asyncio.Event()

        class Stalling(AsyncGlossatorRedisSaver):
            async def aput_writes(self, config: Any, writes: Any, task_id: str, *a: Any) -> None:
                await super().aput_writes(config, writes, task_id, *a)
                wrote.set()  # the start task's writes (the input) are saved

            async def aput(self, config: Any, checkpoint: Any, metadata: Any, versions: Any) -> Any:
                if metadata.get("step") == 0:  # the input checkpoint (-1) is saved
                    stalled.set()
                    await asyncio.Event().wait()  # "killed": step 0 is never saved
                return await super().aput(config, checkpoint, metadata, versions)

        saver = Stalling(url=cluster.server.url, prefix="glossator:checkpoint")
        graph = build_graph(deps).compile(checkpointer=saver)
        run = asyncio.create_task(drive(graph, start, thread, None))
        await wrote.wait()
        await stalled.wait()
        run.cancel()
        await saver.aclose()
        async with async_redis_checkpointer(cluster.server.url) as fine:
            graph = build_graph(deps).compile(checkpointer=fine)
            saved = await graph.aget_state({"configurable": {"thread_id": thread}})
            final = await drive(graph, start, thread, None)
        await deps.probe.close()
        return saved, final

    saved, final = asyncio.run(main())
    assert saved.values and not saved.next  # looks finished, but was never run
    assert final.explanation is not None and final.round >= 1


def test_job_progress_counts_each_feature_once_and_keeps_failure_reasons(
    redis_client: redis.Redis,
) -> None:
    jobs = JobStore(redis_client)  # bytes replies, as a client without decoding gives
    spec = JobSpec(features=[3, 5, 7], subject="s", evidence="e")
    job = jobs.create(spec)
    assert (job.state, job.total, job.done, job.pending) == ("queued", 3, 0, 3)
    assert jobs.begin(job.id, 3) and jobs.spec(job.id) == spec
    assert jobs.status(job.id).state == "running"
    jobs.finish(job.id, 3, "run-3")
    jobs.finish(job.id, 3, "run-3")  # a message delivered twice
    assert not jobs.begin(job.id, 3)  # done: another delivery is skipped
    jobs.fail(job.id, 5, "the LLM sent junk")
    jobs.fail(job.id, 3, "a late duplicate that failed")  # done stays done
    status = jobs.status(job.id)
    assert (status.state, status.done, status.pending) == ("running", 1, 1)
    assert status.failed == {5: "the LLM sent junk"} and status.finished_at is None
    for _ in range(MAX_STARTS):  # each start, its worker died (no finish, no fail)
        assert jobs.begin(job.id, 7)
    assert not jobs.begin(job.id, 7)  # not handed to yet another worker
    final = jobs.status(job.id)
    assert final.state == "failed" and final.finished_at is not None and final.pending == 0
    assert final.failed[7] == f"started {MAX_STARTS} times without finishing"
    assert jobs.runs(job.id) == {3: "run-3"}
    assert jobs.cancel(job.id).state == "failed"  # finished: cancelling changes nothing
    with pytest.raises(ValueError, match="distinct"):
        JobSpec(features=[1, 1], subject="s", evidence="e")
