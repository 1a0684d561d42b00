"""Benchmark runs over HTTP, the same runs as `glossator bench` (evals/, results in
Redis): POST /bench starts (or resumes) one in this process and returns its id at once;
GET /bench lists the runs; GET /bench/{run_id} is its progress, its summary so far
(mean and 95% interval per explainer and scorer, paired differences, cost, failures)
and its status. A run cut off by a restart resumes where it was when POSTed again, by
the key that started it or an admin key (403 for others); a run that a quiet process
holds answers 409 with Retry-After (see runtime/leases.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from typing import Annotated, Any, Literal, get_args

import redis
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field, field_validator

from api.server_auth import (
    OWNER_ONLY,
    ApiKey,
    check_feature_count,
    check_owner,
    error_docs,
    read_access,
)
from api.services import Services, services
from evals.report import Summary, summarize
from evals.results import BenchConfig, BenchResults, list_runs
from identifiers import redis_keys
from identifiers.redis_keys import decoded
from runtime import leases
from runtime.apikeys import ApiKeyStoreError, TooManyRuns
from runtime.bench import BenchOptions
from runtime.bench_options import (
    EXPLAINERS,
    JUDGES,
    SCORERS,
    BenchOptionError,
    check_run_name,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/bench", tags=["bench"])

SLOT_REFRESH_S = 10.0  # the run slot's refresh (its ttl is 60 s)
# The names runtime.bench knows, spelled out so the OpenAPI schema lists them.
Explainer = Literal["agent", "oneshot", "toptokens", "tokenstats", "logitlens"]
Scorer = Literal[
    "detection", "fuzzing", "simulation", "embedding", "generative", "predictive", "truth",
    "intruder", "intruder-explained", "output", "output-pick",
]  # fmt: skip
JudgeName = Literal["predicate", "llm", "local"]
assert set(get_args(Explainer)) == set(EXPLAINERS) and set(get_args(Scorer)) == set(SCORERS)
assert set(get_args(JudgeName)) == set(JUDGES)


class BenchRequest(BaseModel):
    features: list[int] | None = Field(
        default=None, min_length=1, description="default: every feature that fired"
    )
    explainers: list[Explainer] = Field(default=["agent", "toptokens"], min_length=1)
    scorers: list[Scorer] = Field(
        default=["detection", "fuzzing", "simulation", "embedding"], min_length=1
    )
    judges: list[JudgeName] | None = Field(default=None, description="default: auto")
    per_quantile: int = Field(default=2, ge=1, le=50)
    non_activating: int = Field(default=20, ge=1, le=500)
    seed: int = Field(default=0, ge=0, le=2**31)
    max_rounds: int = Field(default=10, ge=1, le=50)
    run: str | None = Field(default=None, pattern=r"^[\w.-]{1,64}$")

    @field_validator("run")
    @classmethod
    def _run_name(cls, value: str | None) -> str | None:
        return value if value is None else check_run_name(value)


class BenchView(BaseModel):
    run_id: str
    status: Literal["running", "finished", "incomplete"]
    features: int
    features_done: int  # every explainer explained (or failed) and every score is in
    config: BenchConfig
    summary: Summary


def _live_key(run_id: str) -> str:
    return redis_keys.bench_live(run_id)


def _owner_key(run_id: str) -> str:
    return redis_keys.bench_owner(run_id)


def _lease(client: Any, run_id: str, driving_here: bool) -> bool:
    """Take the run's lease: True when this request drives it, False when a live
    process does (follow it); 409 with Retry-After when a quiet process holds it."""
    standing = leases.take(client, _live_key(run_id))
    if standing is None:
        return True
    action, wait_s = leases.verdict(standing, driving_here)
    if action == "take" and leases.take(client, _live_key(run_id), replace=standing) is None:
        return True
    if action == "follow":
        return False
    wait = max(1, math.ceil(wait_s))
    raise HTTPException(
        409,
        f"benchmark run {run_id} is held by {standing.holder}, quiet for "
        f"{standing.quiet_s:.0f} s (stopped, or stuck); POST again in {wait} s to resume it",
        headers={"Retry-After": str(wait)},
    )


@router.post(
    "",
    status_code=202,
    summary="Start (or resume) a benchmark run",
    responses=error_docs(e403=OWNER_ONLY, e409="a quiet process holds the run: see Retry-After"),
)
async def start_bench(
    body: BenchRequest,
    request: Request,
    svc: Annotated[Services, Depends(services)],
    key: ApiKey,
) -> BenchView:
    from runtime.bench import plan_bench

    settings = request.app.state.settings
    store = svc.setup.deps.store
    features = body.features or store.firing_features()
    check_feature_count(len(features), settings)
    options = BenchOptions(features=features, **body.model_dump(exclude={"features"}))
    began = time.time()
    try:
        bench = await asyncio.to_thread(plan_bench, settings, svc.setup, options)
    except (BenchOptionError, ValueError) as error:
        raise HTTPException(422, str(error)) from error
    run_id = bench.config.run_id
    client = request.app.state.redis
    if bench.config.created_at >= began:  # stored by this request: a new run, the key's
        client.set(_owner_key(run_id), key.id, nx=True)
    if (view := _view(client, run_id)).status == "finished":
        return view  # nothing left to change
    owner = client.get(_owner_key(run_id))
    # No owner: stored before owners were recorded, or by the CLI: admin keys only.
    check_owner(key, None if owner is None else decoded(owner), f"benchmark run {run_id}", "resume")
    slot = f"bench:{run_id}"
    here = svc.runs.tasks.get(slot)
    if not _lease(client, run_id, here is not None and not here.done()):
        return view  # a live process drives it
    try:
        await asyncio.to_thread(svc.runs.slots.acquire, key.id, slot)
    except TooManyRuns as error:
        leases.release(client, _live_key(run_id))
        raise HTTPException(429, str(error)) from error

    async def run() -> None:
        from evals.runner import run_bench

        async def keep_lease() -> None:
            for n in itertools.count(1):
                await asyncio.sleep(leases.BEAT_S)
                with contextlib.suppress(redis.RedisError, ApiKeyStoreError):
                    leases.beat(client, _live_key(run_id))
                    if n % round(SLOT_REFRESH_S / leases.BEAT_S) == 0:
                        svc.runs.slots.refresh(key.id, slot)

        lease = asyncio.create_task(keep_lease())
        try:
            await run_bench(bench)
        except Exception:  # the run stays incomplete; POST again resumes it
            log.exception("benchmark %s failed", run_id)
        finally:
            lease.cancel()
            with contextlib.suppress(redis.RedisError, ApiKeyStoreError):
                leases.release(client, _live_key(run_id))
                svc.runs.slots.release(key.id, slot)

    svc.runs.tasks[slot] = asyncio.create_task(run())
    return _view(client, run_id)


@router.get("", summary="Benchmark runs, oldest first", dependencies=[Depends(read_access)])
def list_bench(request: Request) -> list[str]:
    return list_runs(request.app.state.redis)


@router.get(
    "/{run_id}",
    summary="A benchmark run: status, progress and its summary so far",
    dependencies=[Depends(read_access)],
)
def get_bench(run_id: str, request: Request) -> BenchView:
    return _view(request.app.state.redis, run_id)


def _view(client: Any, run_id: str) -> BenchView:
    results = BenchResults(client, run_id)
    config = results.config() if len(run_id) <= 200 else None
    if config is None:
        raise HTTPException(404, f"no benchmark run {run_id!r}; GET /bench lists them")
    scores, explanations, failures = results.scores(), results.explanations(), results.failures()
    # Recorded counts, unscored included (e.g. prose with no LLM judge): a resume retries.
    scored = {(s.explainer, s.scorer, s.feature) for s in scores}

    def finished(feature: int) -> bool:
        # Scores follow the explanation, except for a feature the score corpus never
        # fires on: unscored with no explanation (see evals.runner).
        return all(
            f"{explainer}:{feature}" in failures
            or all((explainer, s, feature) in scored for s in config.scorers)
            for explainer in config.explainers
        )

    done = sum(finished(f) for f in config.features)
    live = bool(client.exists(_live_key(run_id)))
    status: Literal["running", "finished", "incomplete"] = (
        "running" if live else "finished" if done == len(config.features) else "incomplete"
    )
    return BenchView(
        run_id=run_id,
        status=status,
        features=len(config.features),
        features_done=done,
        config=config,
        summary=summarize(config, scores, explanations, failures),
    )
