"""Benchmark runs over HTTP, the same runs as `glossator bench` (evals/, results in
Redis): POST /bench starts (or resumes) one in this process and returns its id at once;
GET /bench lists the runs; GET /bench/{run_id} is its progress, its summary so far
(mean and 95% interval per explainer and scorer, paired differences, cost, failures)
and its status. A run cut off by a restart resumes where it was when POSTed again."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field, field_validator

from api.server_auth import ApiKey, check_feature_count, read_access
from api.services import Services, services
from evals.report import Summary, summarize
from evals.results import BenchConfig, BenchResults, list_runs
from identifiers import redis_keys
from runtime.apikeys import TooManyRuns
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

LEASE_S = 30
# The names runtime.bench knows, spelled out so the OpenAPI schema lists them.
Explainer = Literal["agent", "oneshot", "toptokens", "tokenstats"]
Scorer = Literal[
    "detection", "fuzzing", "simulation", "embedding", "generative", "predictive", "truth"
]
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


@router.post("", status_code=202, summary="Start (or resume) a benchmark run")
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
    try:
        bench = await asyncio.to_thread(plan_bench, settings, svc.setup, options)
    except (BenchOptionError, ValueError) as error:
        raise HTTPException(422, str(error)) from error
    run_id = bench.config.run_id
    client = request.app.state.redis
    if not client.set(_live_key(run_id), 1, ex=LEASE_S, nx=True):
        return _view(client, run_id)  # already running somewhere
    try:
        await asyncio.to_thread(svc.runs.slots.acquire, key.id, f"bench:{run_id}")
    except TooManyRuns as error:
        client.delete(_live_key(run_id))
        raise HTTPException(429, str(error)) from error

    async def run() -> None:
        from evals.runner import run_bench

        async def keep_lease() -> None:
            while True:
                await asyncio.sleep(LEASE_S / 3)
                client.set(_live_key(run_id), 1, ex=LEASE_S)
                svc.runs.slots.refresh(key.id, f"bench:{run_id}")

        lease = asyncio.create_task(keep_lease())
        try:
            await run_bench(bench)
        except Exception:  # the run stays incomplete; POST again resumes it
            log.exception("benchmark %s failed", run_id)
        finally:
            lease.cancel()
            client.delete(_live_key(run_id))
            svc.runs.slots.release(key.id, f"bench:{run_id}")

    svc.runs.keep(asyncio.create_task(run()))
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
