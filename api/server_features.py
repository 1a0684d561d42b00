"""GET /features (a filtered, paginated list) and GET /features/{feature} (everything
known about one feature: evidence, explanation, labels, scores, run history)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from agent.explanations import ExplanationRecord, ExplanationStore
from api.server_auth import read_access
from api.services import Services, services
from evals.results import BenchResults, list_runs
from probes.evidence.store import FeatureEvidence

router = APIRouter(prefix="/features", tags=["features"], dependencies=[Depends(read_access)])

MAX_PAGE = 500
SortKey = Literal["feature", "density", "confidence", "score", "max_act"]


class ExplanationSummary(BaseModel):
    text: str  # both sides: when it fires and, when steering confirmed it, what it promotes
    output: str | None = None  # the output side alone
    labels: list[str]
    confidence: float
    score: float | None
    scorer: str | None
    explainer: str
    run_id: str

    @classmethod
    def of(cls, record: ExplanationRecord) -> ExplanationSummary:
        ex = record.explanation
        return cls(
            text=ex.both_sides,
            output=ex.output_text,
            labels=ex.labels,
            confidence=ex.confidence,
            score=record.score,
            scorer=record.scorer,
            explainer=record.explainer,
            run_id=record.run_id,
        )


class FeatureRow(BaseModel):
    feature: int
    name: str
    density: float
    max_act: float
    fired_tokens: int
    explanation: ExplanationSummary | None


class FeaturePage(BaseModel):
    total: int  # features matching the filters
    offset: int
    limit: int
    items: list[FeatureRow]


class FeatureDetail(BaseModel):
    feature: int
    name: str
    evidence: FeatureEvidence
    explanation: ExplanationRecord | None
    labels: list[str]
    scores: list[dict[str, Any]]  # scored agent runs, and benchmark scores of this feature
    runs: list[ExplanationRecord]  # the run history, oldest first


def _explanations(svc: Services, request: Request) -> ExplanationStore:
    return ExplanationStore(request.app.state.redis, svc.setup.subject)


@router.get("", summary="Features, filtered and paginated")
def list_features(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    explained: Annotated[bool | None, Query(description="only (un)explained ones")] = None,
    fired: Annotated[bool | None, Query(description="only features that (never) fired")] = None,
    min_density: Annotated[float | None, Query(ge=0, le=1)] = None,
    max_density: Annotated[float | None, Query(ge=0, le=1)] = None,
    min_score: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    max_score: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="words the explanation contains")
    ] = None,
    sort: Annotated[
        SortKey, Query(description="order by this; features without a value come last")
    ] = "feature",
    order: Annotated[Literal["asc", "desc"], Query(description="ascending or descending")] = "asc",
) -> FeaturePage:
    store = svc.setup.deps.store
    count_F = store.tensor("stats.count")
    tokens = max(int(store.tensor("stats.tokens")[0]), 1)
    density_F = count_F.double() / tokens
    keep_F = torch.ones_like(count_F, dtype=torch.bool)
    if fired is not None:
        keep_F &= (count_F > 0) == fired
    if min_density is not None:
        keep_F &= density_F >= min_density
    if max_density is not None:
        keep_F &= density_F <= max_density
    chosen = keep_F.nonzero().squeeze(1).tolist()
    explanations = _explanations(svc, request)
    needs_records = min_score is not None or max_score is not None or q is not None
    if explained is not None or needs_records:
        have = set(explanations.features())
        chosen = [f for f in chosen if (f in have) == (explained is not False)]
    if needs_records:
        records = explanations.current_many(chosen)
        chosen = [f for f in chosen if _matches(records.get(f), min_score, max_score, q)]
    if sort in ("density", "max_act") and chosen:
        values_F = density_F if sort == "density" else store.tensor("stats.max")
        chosen_N = torch.tensor(chosen)
        ranked_N = torch.sort(values_F[chosen_N], descending=order == "desc", stable=True)
        chosen = chosen_N[ranked_N.indices].tolist()  # ties stay in feature order
    elif sort in ("confidence", "score"):
        have = set(explanations.features())
        known = explanations.current_many([f for f in chosen if f in have])
        chosen = _sorted(chosen, [_record_value(known.get(f), sort) for f in chosen], order)
    elif order == "desc":
        chosen = chosen[::-1]
    page = chosen[offset : offset + limit]
    records = explanations.current_many(page)
    max_F = store.tensor("stats.max")
    items = [
        FeatureRow(
            feature=f,
            name=svc.name(f),
            density=float(density_F[f]),
            max_act=float(max_F[f]),
            fired_tokens=int(count_F[f]),
            explanation=ExplanationSummary.of(records[f]) if f in records else None,
        )
        for f in page
    ]
    return FeaturePage(total=len(chosen), offset=offset, limit=limit, items=items)


def _record_value(record: ExplanationRecord | None, sort: str) -> float | None:
    if record is None:
        return None
    return record.explanation.confidence if sort == "confidence" else record.score


def _sorted(features: list[int], values: list[float | None], order: str) -> list[int]:
    """`features` ordered by `values` (ties by feature index, ascending), None last."""
    sign = -1.0 if order == "desc" else 1.0
    pairs = zip(features, values, strict=True)
    ranked = sorted(pairs, key=lambda fv: (fv[1] is None, sign * (fv[1] or 0.0), fv[0]))
    return [f for f, _ in ranked]


def _matches(
    record: ExplanationRecord | None, lo: float | None, hi: float | None, q: str | None
) -> bool:
    if record is None:
        return False
    if lo is not None and (record.score is None or record.score < lo):
        return False
    if hi is not None and (record.score is None or record.score > hi):
        return False
    if q is not None:
        haystack = " ".join([record.explanation.both_sides, *record.explanation.labels]).lower()
        return all(word in haystack for word in q.lower().split())
    return True


@router.get(
    "/{feature}",
    summary="One feature: evidence, explanation, labels, scores, run history",
)
def feature_detail(
    feature: str, request: Request, svc: Annotated[Services, Depends(services)]
) -> FeatureDetail:
    index = svc.feature(feature)
    explanations = _explanations(svc, request)
    current = explanations.current(index)
    runs = explanations.history(index)
    scores = [
        {"run_id": r.run_id, "scorer": r.scorer, "score": r.score}
        for r in runs
        if r.score is not None
    ] + _bench_scores(request.app.state.redis, svc, index)
    return FeatureDetail(
        feature=index,
        name=svc.name(index),
        evidence=svc.setup.deps.evidence(index),
        explanation=current,
        labels=current.explanation.labels if current else [],
        scores=scores,
        runs=runs,
    )


RECENT_BENCH_RUNS = 20  # a detail page reads this many of the newest benchmark runs


def _bench_scores(client: Any, svc: Services, feature: int) -> list[dict[str, Any]]:
    """The feature's scores in the newest benchmark runs of this evidence."""
    found = []
    for run_id in list_runs(client)[-RECENT_BENCH_RUNS:]:
        results = BenchResults(client, run_id)
        config = results.config()
        evidence = svc.setup.deps.store.manifest.evidence_id
        if config is None or config.evidence_id != evidence or feature not in config.features:
            continue
        for explainer in config.explainers:
            for scorer in config.scorers:
                score = results.score(explainer, scorer, feature)
                if score is not None:
                    found.append(
                        {
                            "bench": run_id,
                            "explainer": explainer,
                            "scorer": scorer,
                            "score": score.score,
                            "judge": score.judge,
                            "error": score.error,
                        }
                    )
    return found
