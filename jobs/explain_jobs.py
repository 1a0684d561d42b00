"""Batch jobs: explain a list of features on the workers, and follow them in Redis.

Python API (the CLI and the HTTP service use the same calls):

- `await submit_explain_job(settings, setup, features, budget, new=False,
  spec_path=None, owner=None, job_id=None) -> JobStatus`: records the job and puts one
  message per feature on the subject's queue (`jobs.queue`); `glossator worker`
  processes take them. Raises ValueError for an empty list, an index outside the
  evidence, or more than `settings.max_features_per_job`; a feature that never fired is
  failed by its worker, with that reason. `new`: fresh runs named after the job, else
  each feature's run of this configuration is resumed (or, when finished, counted
  without running again). Its Redis calls are brief and sync; call it from an async
  handler as is.
- `JobStore(client)` (a sync redis client, bytes or str replies):
  `create(spec, owner=None, job_id=None) -> JobStatus` (`owner`: the API key id that
  made it over HTTP), `status(job_id) -> JobStatus`, `spec(job_id) -> JobSpec`,
  `runs(job_id) -> dict[int, str]` (feature -> the run id that explained it),
  `list(limit=50) -> list[JobStatus]` (newest first), `cancel(job_id) -> JobStatus`;
  unknown ids raise `UnknownJobError` (a KeyError). The workers call `begin`, `finish`
  and `fail`.
- `live_workers(client, subject_key) -> dict[str, dict]`: the workers with a fresh
  heartbeat (consumer name -> host, pid, concurrency).

A job's state: `queued` until a worker starts one of its features, `running`, then
`done` when every feature is explained, `failed` when every feature finished and some
failed (the others' explanations are stored; `failed` says which failed and why), or
`cancelled` (its remaining messages are acknowledged and skipped; runs already going
finish and count). Progress is counted in Redis hashes keyed by feature, so a message
delivered twice (at-least-once) never counts twice.

Keys (`{id}` a job id; values are versioned pydantic JSON or plain strings):
- `glossator:job:{id}:spec`: the `JobSpec`;
- `glossator:job:{id}:meta`: a hash: kind, subject, total, owner (an API key id; absent
  for jobs of the CLI and those made before owners were recorded), created_at,
  started_at, finished_at, cancelled_at (ISO 8601 times);
- `glossator:job:{id}:done` / `:failed`: hashes, feature -> run id / reason;
- `glossator:job:{id}:starts`: a hash, feature -> deliveries started (see MAX_STARTS);
- `glossator:jobs`: a sorted set of job ids by creation time;
- `glossator:workers:{subject}`: a sorted set of worker names by last heartbeat (Redis
  time), and `glossator:workers:{subject}:{name}`: what the worker is (expires).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, field_validator

from agent.state import Budget
from errors import UserError
from identifiers import redis_keys
from identifiers.features import unknown_feature
from identifiers.redis_keys import decoded

if TYPE_CHECKING:
    from runtime.agent import AgentSetup
    from runtime.settings import Settings

JOB_VERSION = 1
PREFIX = redis_keys.JOB
INDEX_KEY = redis_keys.JOBS_INDEX
# A feature whose message was started this many times without finishing (a worker died
# each time: out of memory?) is failed instead of being handed to yet another worker.
MAX_STARTS = 5
HEARTBEAT_TTL_S = 15
JobState = Literal["queued", "running", "done", "failed", "cancelled"]


class UnknownJobError(UserError, KeyError):
    """No job with this id (never created, or from another Redis)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class JobSpec(BaseModel):
    """What a job does: explain `features` of the subject `subject` with `budget`."""

    version: int = JOB_VERSION
    kind: Literal["explain"] = "explain"
    features: list[int] = Field(min_length=1)
    subject: str = Field(min_length=1)  # Subject.key: the queue it goes to
    evidence: str  # the submitter's evidence id (workers name runs by their own)
    planted: bool = False
    spec: str | None = None  # the planted spec file, when given
    budget: Budget = Field(default_factory=Budget)
    new: bool = False  # fresh runs, named after the job, instead of resuming earlier ones

    @field_validator("features")
    @classmethod
    def _distinct(cls, features: list[int]) -> list[int]:
        if len(set(features)) != len(features):
            raise UserError("features must be distinct")
        if min(features) < 0:
            raise UserError("feature indices are >= 0")
        return features


class JobStatus(BaseModel):
    id: str
    kind: str
    subject: str
    state: JobState
    owner: str | None = None  # the API key id that made it; None: admin keys only
    total: int
    done: int  # features explained (and stored)
    failed: dict[int, str]  # feature -> why
    pending: int  # neither done nor failed yet
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None  # when the last feature finished, or cancelled


# Records one feature's outcome and, when it was the last, the job's finish time, in one
# step (a script runs atomically): a feature explained after it was marked failed (two
# deliveries at once) counts once, as done.
_FINISH = """
local meta, done, failed = KEYS[1], KEYS[2], KEYS[3]
local feature, outcome, value, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if outcome == 'done' then
  redis.call('HSET', done, feature, value)
  redis.call('HDEL', failed, feature)
elseif redis.call('HEXISTS', done, feature) == 0 then
  redis.call('HSET', failed, feature, value)
end
local total = tonumber(redis.call('HGET', meta, 'total'))
if redis.call('HLEN', done) + redis.call('HLEN', failed) >= total then
  redis.call('HSETNX', meta, 'finished_at', now)
end
return 1
"""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _time(meta: dict[str, str], name: str) -> datetime | None:
    value = meta.get(name)
    return datetime.fromisoformat(value) if value else None


class JobStore:
    """Jobs in Redis. `client` is a sync redis client (thread-safe: the worker calls it
    from threads, so a slow Redis never blocks its event loop)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._finish = client.register_script(_FINISH)

    @staticmethod
    def key(job_id: str, part: str) -> str:
        return f"{PREFIX}:{job_id}:{part}"

    def create(
        self, spec: JobSpec, owner: str | None = None, job_id: str | None = None
    ) -> JobStatus:
        """Record a job (`job_id` when the caller chose it, see `new_job_id`)."""
        job_id = job_id or new_job_id()
        created = _now()
        meta: dict[str, Any] = {
            "kind": spec.kind,
            "subject": spec.subject,
            "total": len(spec.features),
            "created_at": created,
        }
        if owner is not None:
            meta["owner"] = owner
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.key(job_id, "spec"), spec.model_dump_json())
            pipe.hset(self.key(job_id, "meta"), mapping=meta)
            pipe.zadd(INDEX_KEY, {job_id: datetime.now(UTC).timestamp()})
            pipe.execute()
        return self.status(job_id)

    def spec(self, job_id: str) -> JobSpec:
        raw = self.client.get(self.key(job_id, "spec"))
        if raw is None:
            raise UnknownJobError(f"no job {job_id!r}; list the jobs to find its id")
        return JobSpec.model_validate_json(raw)

    def status(self, job_id: str) -> JobStatus:
        """Read from the job's counters alone (never its feature list: polled often)."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.key(job_id, "meta"))
            pipe.hlen(self.key(job_id, "done"))
            pipe.hgetall(self.key(job_id, "failed"))
            raw_meta, done, raw_failed = pipe.execute()
        if not raw_meta:
            raise UnknownJobError(f"no job {job_id!r}; list the jobs to find its id")
        meta = {decoded(k): decoded(v) for k, v in raw_meta.items()}
        failed = dict(sorted((int(decoded(k)), decoded(v)) for k, v in raw_failed.items()))
        total = int(meta["total"])
        state: JobState = "running" if "started_at" in meta else "queued"
        if "cancelled_at" in meta:
            state = "cancelled"
        elif "finished_at" in meta:
            state = "failed" if failed else "done"
        return JobStatus(
            id=job_id,
            kind=meta["kind"],
            subject=meta["subject"],
            state=state,
            owner=meta.get("owner"),
            total=total,
            done=done,
            failed=failed,
            pending=max(0, total - done - len(failed)),
            created_at=_time(meta, "created_at") or datetime.now(UTC),
            started_at=_time(meta, "started_at"),
            finished_at=_time(meta, "cancelled_at") or _time(meta, "finished_at"),
        )

    def runs(self, job_id: str) -> dict[int, str]:
        """The features explained so far, each with the run id stored for it."""
        raw = self.client.hgetall(self.key(job_id, "done"))
        return {
            int(decoded(k)): decoded(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))
        }

    def list(self, limit: int = 50) -> list[JobStatus]:
        ids = [decoded(i) for i in self.client.zrevrange(INDEX_KEY, 0, max(0, limit - 1))]
        found = []
        for job_id in ids:
            try:
                found.append(self.status(job_id))
            except UnknownJobError:  # deleted by hand: the index is only a listing
                continue
        return found

    def cancel(self, job_id: str) -> JobStatus:
        """Stop handing out the job's features; a finished job stays as it was."""
        status = self.status(job_id)
        if status.state in ("queued", "running"):
            self.client.hsetnx(self.key(job_id, "meta"), "cancelled_at", _now())
        return self.status(job_id)

    # The worker's side.

    def begin(self, job_id: str, feature: int) -> bool:
        """Whether this feature is still to do (False: the job was cancelled, already has
        it, or does not exist); marks the job running."""
        meta = self.key(job_id, "meta")
        with self.client.pipeline(transaction=True) as pipe:
            pipe.exists(meta)
            pipe.hexists(meta, "cancelled_at")
            pipe.hexists(self.key(job_id, "done"), feature)
            pipe.hexists(self.key(job_id, "failed"), feature)
            exists, cancelled, is_done, is_failed = pipe.execute()
        if not exists or cancelled or is_done or is_failed:
            return False
        starts = int(self.client.hincrby(self.key(job_id, "starts"), str(feature), 1))
        if starts > MAX_STARTS:
            self.fail(job_id, feature, f"started {MAX_STARTS} times without finishing")
            return False
        self.client.hsetnx(meta, "started_at", _now())
        return True

    def finish(self, job_id: str, feature: int, run_id: str) -> None:
        self._record(job_id, feature, "done", run_id)

    def fail(self, job_id: str, feature: int, reason: str) -> None:
        self._record(job_id, feature, "failed", reason)

    def _record(self, job_id: str, feature: int, outcome: str, value: str) -> None:
        keys = [self.key(job_id, p) for p in ("meta", "done", "failed")]
        self._finish(keys=keys, args=[feature, outcome, value, _now()])


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


def workers_key(subject_key: str) -> str:
    return redis_keys.workers(subject_key)


def beat(client: Any, subject_key: str, consumer: str, about: dict[str, Any]) -> None:
    """A worker's heartbeat: its name in the subject's sorted set, scored by Redis's own
    clock (workers on other machines may disagree about the time), and what it is."""
    now = _server_time(client)
    key = workers_key(subject_key)
    with client.pipeline(transaction=True) as pipe:
        pipe.zadd(key, {consumer: now})
        pipe.zremrangebyscore(key, "-inf", now - HEARTBEAT_TTL_S)  # the ones gone quiet
        pipe.set(f"{key}:{consumer}", json.dumps(about), ex=HEARTBEAT_TTL_S)
        pipe.execute()


def forget_worker(client: Any, subject_key: str, consumer: str) -> None:
    key = workers_key(subject_key)
    client.pipeline(transaction=True).zrem(key, consumer).delete(f"{key}:{consumer}").execute()


def live_workers(client: Any, subject_key: str) -> dict[str, dict[str, Any]]:
    """The workers on this subject's queue with a fresh heartbeat: consumer name -> what
    it said of itself (host, pid, concurrency)."""
    key = workers_key(subject_key)
    names = [
        decoded(n)
        for n in client.zrangebyscore(key, _server_time(client) - HEARTBEAT_TTL_S, "+inf")
    ]
    abouts = client.mget([f"{key}:{n}" for n in names]) if names else []
    return {n: json.loads(a) for n, a in zip(names, abouts, strict=True) if a is not None}


def _server_time(client: Any) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


async def submit_explain_job(
    settings: Settings,
    setup: AgentSetup,
    features: list[int],
    budget: Budget,
    new: bool = False,
    spec_path: Path | None = None,
    owner: str | None = None,
    job_id: str | None = None,
) -> JobStatus:
    """Record a job over `features` (owned by the API key id `owner`, under `job_id`
    when given) and queue one message per feature for the workers of `setup`'s subject.
    A job that could not be fully queued is cancelled."""
    from jobs.queue import enqueue_features
    from runtime.redis_server import connect, redis_url

    chosen = list(dict.fromkeys(features))
    n_features = setup.deps.store.n_features
    if not chosen:
        raise UserError("no features to explain")
    if problem := unknown_feature(chosen, n_features):
        raise UserError(problem)
    if len(chosen) > settings.max_features_per_job:
        raise UserError(
            f"{len(chosen):,} features in one job; the limit is {settings.max_features_per_job:,}"
            " (GLOSSATOR_MAX_FEATURES_PER_JOB): split the range"
        )
    spec = JobSpec(
        features=chosen,
        subject=setup.subject.key,
        evidence=setup.deps.store.manifest.evidence_id,
        planted=setup.feature_names is not None,
        spec=str(spec_path) if spec_path else None,
        budget=budget,
        new=new,
    )
    client = connect(settings)
    jobs = JobStore(client)
    try:
        status = jobs.create(spec, owner, job_id)
        try:
            await enqueue_features(redis_url(settings), spec.subject, status.id, chosen)
        except BaseException:
            jobs.cancel(status.id)
            raise
    finally:
        client.close()
    return status
