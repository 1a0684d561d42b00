"""POST /activations: texts in, tokens out with the chosen features' activations, or
the strongest features of each token. The forwards are batched with the running agents'
probes (ProbeRunner.activations), so concurrent requests share the model. A request
without an API key spends its texts from its address's token bucket
(settings.anonymous_texts_per_minute; 429 with Retry-After when empty)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from api.server_auth import check_texts, limit_anonymous, optional_key, read_access
from api.services import Services, services
from identifiers.features import unknown_feature
from probes.activations import FeatureActivations
from runtime.apikeys import KeyInfo

router = APIRouter(tags=["activations"], dependencies=[Depends(read_access)])

MAX_TOP = 64
MAX_FEATURES = 256  # chosen features per request: a wide table per token is rarely useful


class ActivationsRequest(BaseModel):
    texts: list[str] = Field(min_length=1, description="texts to run through model and SAE")
    features: list[int] | None = Field(
        default=None,
        max_length=MAX_FEATURES,
        description="feature indices to report for every token",
    )
    top: int | None = Field(
        default=None, ge=1, le=MAX_TOP, description="the N strongest features of each token"
    )


class FeatureValue(BaseModel):
    feature: int
    activation: float


class TokenActivations(BaseModel):
    text: str
    start: int  # character span of the token in its text
    end: int
    activations: list[float] | None = None  # one per requested feature, in order
    top: list[FeatureValue] | None = None


class TextActivations(BaseModel):
    text: str
    tokens: list[TokenActivations]


class ActivationsResponse(BaseModel):
    features: list[int] | None
    top: int | None
    texts: list[TextActivations]


@router.post(
    "/activations",
    summary="Per-token activations of chosen features, or each token's strongest features",
)
async def activations(
    body: ActivationsRequest,
    request: Request,
    svc: Annotated[Services, Depends(services)],
    key: Annotated[KeyInfo | None, Depends(optional_key)],
) -> ActivationsResponse:
    check_texts(body.texts, request.app.state.settings)
    n = svc.setup.deps.store.n_features
    if problem := unknown_feature(body.features or [], n):
        raise HTTPException(404, problem)
    # After the checks (a refused request costs no CPU), before the forwards; Redis in a
    # thread, so the event loop never waits on it.
    await asyncio.to_thread(limit_anonymous, request, key, len(body.texts))
    top = body.top if body.top is not None or body.features else 5
    results = await svc.setup.deps.probe.activations(body.texts)
    return ActivationsResponse(
        features=body.features,
        top=top,
        texts=[_text(r, body.features, top) for r in results],
    )


def _text(
    result: FeatureActivations, features: list[int] | None, top: int | None
) -> TextActivations:
    dense_TF = result.dense(features).tolist() if features else None
    rows = result.by_token() if top is not None else None
    tokens = []
    for t, span in enumerate(result.tokens):
        strongest = None
        if rows is not None:
            ranked = sorted(rows[t].items(), key=lambda fv: (-fv[1], fv[0]))[:top]
            strongest = [FeatureValue(feature=f, activation=v) for f, v in ranked]
        tokens.append(
            TokenActivations(
                text=span.text,
                start=span.start,
                end=span.end,
                activations=dense_TF[t] if dense_TF is not None else None,
                top=strongest,
            )
        )
    return TextActivations(text=result.text, tokens=tokens)
