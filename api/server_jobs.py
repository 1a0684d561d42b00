"""Batch jobs over HTTP, run by `glossator worker` processes (jobs/explain_jobs.py, jobs/queue.py):
POST /jobs queues a feature range or list with an agent budget and returns the job at
once; GET /jobs and GET /jobs/{job_id} follow progress and failures (with reasons);
POST /jobs/{job_id}/cancel stops what has not started (the job's owner, or an admin
key); GET /workers lists the workers listening for this service's features. A key has
at most settings.max_open_jobs_per_key jobs queued or running at once (429 beyond)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field, model_validator

from agent.state import Budget
from api.server_auth import (
    OWNER_ONLY,
    ApiKey,
    check_feature_count,
    check_owner,
    error_docs,
    quota_error,
    read_access,
)
from api.services import Services, services
from errors import UserError
from identifiers.features import select_features
from jobs.explain_jobs import (
    JobStatus,
    JobStore,
    UnknownJobError,
    live_workers,
    new_job_id,
    submit_explain_job,
)
from runtime import quotas

router = APIRouter(tags=["jobs"])


class JobRequest(BaseModel):
    features: list[int] | None = Field(default=None, description="feature indices")
    range: str | None = Field(
        default=None,
        max_length=100,
        description='"0:1000" (a range), "sample:8" (a seeded sample); firing features only',
    )
    max_rounds: int = Field(default=10, ge=1, le=50)
    max_probes: int = Field(default=60, ge=1, le=500)
    new: bool = Field(default=False, description="fresh runs instead of resuming earlier ones")

    @model_validator(mode="after")
    def _one_selection(self) -> JobRequest:
        if (self.features is None) == (self.range is None):
            raise UserError("give either features (a list) or range (e.g. '0:1000')")
        return self


class JobView(BaseModel):
    job: JobStatus
    workers: int  # workers listening for this subject's jobs right now
    note: str | None = None


def _jobs(request: Request) -> JobStore:
    return JobStore(request.app.state.redis)


def _view(request: Request, svc: Services, job: JobStatus) -> JobView:
    workers = len(live_workers(request.app.state.redis, svc.setup.subject.key))
    waiting = job.state == "queued" and workers == 0
    note = "no worker is listening: start `glossator worker`" if waiting else None
    return JobView(job=job, workers=workers, note=note)


@router.post("/jobs", status_code=202, summary="Queue a batch of features for the workers")
async def create_job(
    body: JobRequest,
    request: Request,
    svc: Annotated[Services, Depends(services)],
    key: ApiKey,
) -> JobView:
    store = svc.setup.deps.store
    settings = request.app.state.settings
    if body.range is not None:
        alive = store.firing_features()
        try:
            features = select_features(body.range, alive, store.n_features, svc.names).features
        except ValueError as error:
            raise HTTPException(422, f"range {body.range!r}: {error}") from error
    else:
        features = list(dict.fromkeys(body.features or []))
    check_feature_count(len(features), settings)
    budget = Budget(max_rounds=body.max_rounds, max_probe_texts=body.max_probes)
    client, job_id = request.app.state.redis, new_job_id()
    try:  # counted before it exists, so two requests at once cannot both slip under
        quotas.add_open_job(client, key.id, job_id, settings.max_open_jobs_per_key)
    except quotas.QuotaExceeded as error:
        raise quota_error(error) from error
    try:
        job = await submit_explain_job(
            settings, svc.setup, features, budget, new=body.new, owner=key.id, job_id=job_id
        )
    except BaseException as error:
        quotas.forget_job(client, key.id, job_id)
        if isinstance(error, ValueError):
            raise HTTPException(422, str(error)) from error
        raise
    return _view(request, svc, job)


@router.get("/jobs", summary="Jobs, newest first", dependencies=[Depends(read_access)])
def list_jobs(request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[JobStatus]:
    return _jobs(request).list(limit)


@router.get("/jobs/{job_id}", summary="A job's progress", dependencies=[Depends(read_access)])
def get_job(job_id: str, request: Request, svc: Annotated[Services, Depends(services)]) -> JobView:
    try:
        return _view(request, svc, _jobs(request).status(job_id))
    except UnknownJobError as error:
        raise HTTPException(404, str(error)) from error


@router.post(
    "/jobs/{job_id}/cancel",
    summary="Cancel what has not started (owner or admin)",
    responses=error_docs(e403=OWNER_ONLY),
)
def cancel_job(
    job_id: str, request: Request, svc: Annotated[Services, Depends(services)], key: ApiKey
) -> JobView:
    jobs = _jobs(request)
    try:
        check_owner(key, jobs.status(job_id).owner, f"job {job_id}", "cancel")
        return _view(request, svc, jobs.cancel(job_id))
    except UnknownJobError as error:
        raise HTTPException(404, str(error)) from error


@router.get(
    "/workers",
    summary="Workers listening for this service's features",
    dependencies=[Depends(read_access)],
)
def workers(request: Request, svc: Annotated[Services, Depends(services)]) -> dict[str, Any]:
    return live_workers(request.app.state.redis, svc.setup.subject.key)
