"""The Redis key schema: every key glossator writes starts with "glossator:", and is
named here. Stores keep their records under their prefix ("glossator:job:<id>", ...);
`decoded` reads a key or value back from a client that returns bytes."""

from __future__ import annotations

from typing import Any

ROOT = "glossator"

EVIDENCE_LATEST = f"{ROOT}:evidence:latest"  # hash: source slug -> latest evidence id
CHECKPOINT = f"{ROOT}:checkpoint"  # the LangGraph savers' prefix
EXPLANATION = f"{ROOT}:explanation"
CHAT = f"{ROOT}:chat"
RUN = f"{ROOT}:run"  # a run's live events, lease and error
BENCH = f"{ROOT}:bench"
JOB = f"{ROOT}:job"
JOBS_INDEX = f"{ROOT}:jobs"
APIKEY = f"{ROOT}:apikey"
LLM_CACHE = f"{ROOT}:llm:cache:"


def evidence_manifest(evidence_id: str) -> str:
    return f"{ROOT}:evidence:{evidence_id}:manifest"


def evidence_summary(evidence_id: str) -> str:
    return f"{ROOT}:evidence:{evidence_id}:summary"


def bench_live(run_id: str) -> str:
    return f"{BENCH}:{run_id}:live"


def bench_owner(run_id: str) -> str:
    """The API key id that started a benchmark run over HTTP."""
    return f"{BENCH}:{run_id}:owner"


def workers(subject_key: str) -> str:
    """The workers serving one subject (model, SAE, hookpoint) and their heartbeats."""
    return f"{ROOT}:workers:{subject_key}"


def queue(subject_key: str) -> str:
    """The job queue (a Redis stream) of one subject."""
    return f"{ROOT}:queue:{subject_key}"


def decoded(value: Any) -> str:
    """A key or value as text, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)
