"""The feature page: explanation, evidence, token heat, histogram, logit lens, similar
features, 'try your own text', the chat panel and the agent's runs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from agent.explanations import ExplanationStore
from agent.state import Experiment
from api.services import Services
from api.web.common import PageError, failed_page, page_services, render

router = APIRouter(include_in_schema=False)


@dataclass
class Neighbour:
    feature: int
    name: str
    cosine: float
    explanation: str | None


@dataclass
class Tried:
    """The user's text through the model and SAE: tokens and this feature's activations."""

    text: str
    tokens: list[str]
    acts: list[float]
    error: str | None = None


@dataclass
class Steered:
    """The page's steering panel without JavaScript: the text, how far, and what came."""

    text: str
    times: float
    result: Any = None  # api.server_steer.SteeredText
    error: str | None = None


@router.get("/ui/features/{feature}", response_class=HTMLResponse)
async def feature_page(
    feature: str, request: Request, text: str = "", steer_text: str = "", times: float = 4.0
) -> HTMLResponse:
    from api.server_features import feature_detail

    try:
        svc = page_services(request)
        detail = await asyncio.to_thread(feature_detail, feature, request, svc)
        index = detail.feature
        neighbours, threads = await asyncio.to_thread(_around, request, svc, detail)
        evidence = await _evidence_experiments(svc, detail)
        tried = await _try(request, svc, index, text) if text.strip() else None
        steered = await _steer(request, svc, index, steer_text, times) if steer_text else None
    except (PageError, HTTPException) as error:
        return failed_page(request, error)
    stats = detail.evidence.stats
    n = svc.setup.deps.store.n_features
    return render(
        request,
        "feature.html",
        detail=detail,
        ev=detail.evidence,
        stats=stats,
        scale=_scale(detail.evidence),
        neighbours=neighbours,
        threads=threads,
        evidence_experiments=evidence,
        tried=tried,
        steered=steered,
        steer_times=times,
        previous=svc.name(index - 1) if index > 0 else None,
        following=svc.name(index + 1) if index + 1 < n else None,
    )


def _scale(evidence: Any) -> float:
    """What full heat means on this page: the feature's largest activation seen."""
    peaks = [evidence.stats.max_act, *(ex.max_act for ex in evidence.top)]
    return max([p for p in peaks if p > 0] or [1.0])


def _around(request: Request, svc: Services, detail: Any) -> tuple[list[Neighbour], list[Any]]:
    """The similar features (with their explanations) and the feature's chat threads."""
    from agent.chat import ChatStore

    client = request.app.state.redis
    similar = detail.evidence.similar or []
    records = ExplanationStore(client, svc.setup.subject).current_many([n.feature for n in similar])
    neighbours = [
        Neighbour(
            feature=n.feature,
            name=svc.name(n.feature),
            cosine=n.cosine,
            explanation=records[n.feature].explanation.text if n.feature in records else None,
        )
        for n in similar
    ]
    return neighbours, ChatStore(client, svc.setup.subject).threads(detail.feature)


async def _evidence_experiments(svc: Services, detail: Any) -> list[Experiment]:
    """The experiments the current explanation cites, from its run (when still there)."""
    record = detail.explanation
    if record is None or not record.explanation.evidence:
        return []
    try:
        view = await svc.runs.view(record.run_id)
    except HTTPException:
        return []
    if view.state is None:
        return []
    cited = set(record.explanation.evidence)
    return [e for e in view.state.experiments if e.id in cited]


async def _try(request: Request, svc: Services, index: int, text: str) -> Tried:
    """The feature's activations on `text` (the page's form, without JavaScript)."""
    from api.server_activations import _text
    from api.server_auth import check_texts

    try:
        check_texts([text], request.app.state.settings)
    except HTTPException as error:
        return Tried(text=text, tokens=[], acts=[], error=str(error.detail))
    (result,) = await svc.setup.deps.probe.activations([text])
    shown = _text(result, [index], None)
    return Tried(
        text=text,
        tokens=[t.text for t in shown.tokens],
        acts=[(t.activations or [0.0])[0] for t in shown.tokens],
    )


async def _steer(request: Request, svc: Services, index: int, text: str, times: float) -> Steered:
    """The steering panel's form without JavaScript: as POST /steer would answer."""
    from api.server_auth import optional_key
    from api.server_steer import SteerRequest, run_steering

    try:
        body = SteerRequest(feature=index, texts=[text], times=times)
        reply = await run_steering(body, request, svc, optional_key(request))
    except HTTPException as error:
        return Steered(text=text, times=times, error=str(error.detail))
    return Steered(text=text, times=times, result=reply.texts[0])
