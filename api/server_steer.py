"""POST /steer: texts run clean and with one feature steered (its decoder direction added,
or its activation clamped), in turn with the running agents' probe forwards
(ProbeRunner.steer). Answers how far the next-token distribution moved, the tokens
promoted and demoted, and both greedy continuations."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from api.server_auth import check_texts, limit_anonymous, optional_key, read_access
from api.services import Services, services
from errors import UserError
from identifiers.features import unknown_feature
from runtime.apikeys import KeyInfo

if TYPE_CHECKING:
    from probes.steering import TokenShift

router = APIRouter(tags=["steering"], dependencies=[Depends(read_access)])

MAX_TOKENS = 64
MAX_TOP = 50
# What one steered text costs an anonymous caller's bucket, in probe texts: with 16 new
# tokens, steering ran ~11x slower than a probe run (benchmarks/steering_throughput.py).
STEER_TEXT_COST = 8


class SteerRequest(BaseModel):
    feature: int = Field(description="the SAE feature to steer")
    texts: list[str] = Field(min_length=1, description="texts to run clean and steered")
    strength: float | None = Field(default=None, description="add this many units of it")
    clamp: float | None = Field(default=None, description="set its activation to this")
    times: float | None = Field(
        default=None, description="clamp to this multiple of its largest activation"
    )
    tokens: int = Field(default=16, ge=0, le=MAX_TOKENS, description="greedy new tokens")
    top: int = Field(default=10, ge=0, le=MAX_TOP, description="promoted and demoted tokens")


class TokenShiftOut(BaseModel):
    token: str
    token_id: int
    delta_logprob: float  # steered minus clean
    steered_prob: float
    clean_prob: float


class SteeredText(BaseModel):
    text: str
    kl_last: float  # KL(steered || clean) of the next token after the text, nats
    kl_mean: float  # over the text's tokens
    promoted: list[TokenShiftOut]
    demoted: list[TokenShiftOut]
    clean_continuation: str
    steered_continuation: str


class SteerResponse(BaseModel):
    feature: int
    hookpoint: str
    strength: float | None
    clamp: float | None  # with `times`: the activation it was clamped to
    texts: list[SteeredText]


@router.post("/steer", summary="Texts clean and with a feature steered: what it does")
async def steer(
    body: SteerRequest,
    request: Request,
    svc: Annotated[Services, Depends(services)],
    key: Annotated[KeyInfo | None, Depends(optional_key)],
) -> SteerResponse:
    return await run_steering(body, request, svc, key)


async def run_steering(
    body: SteerRequest, request: Request, svc: Services, key: KeyInfo | None
) -> SteerResponse:
    """The route's work, shared with the feature page's panel: HTTPException (4xx) for
    what the caller must fix."""
    from probes.steering_shift import steering_of

    check_texts(body.texts, request.app.state.settings)
    store = svc.setup.deps.store
    if problem := unknown_feature([body.feature], store.n_features):
        raise HTTPException(404, problem)
    await asyncio.to_thread(limit_anonymous, request, key, STEER_TEXT_COST * len(body.texts))
    try:
        max_act = None
        if body.times is not None:
            max_act = (await asyncio.to_thread(store.stats, body.feature)).max_act
        steering = steering_of(
            body.feature, strength=body.strength, clamp=body.clamp, times=body.times,
            max_act=max_act,
        )  # fmt: skip
        results = await svc.setup.deps.probe.steer(
            body.texts, steering, continuation_tokens=body.tokens, top_tokens=body.top
        )
    except UserError as error:  # no SAE to steer, both strength and clamp, ...
        raise HTTPException(422, str(error)) from error
    return SteerResponse(
        feature=body.feature,
        hookpoint=svc.setup.subject.hookpoint,
        strength=steering.strength,
        clamp=steering.clamp,
        texts=[
            SteeredText(
                **{k: v for k, v in asdict(r).items() if k not in ("promoted", "demoted")},
                promoted=[_shift(s) for s in r.promoted],
                demoted=[_shift(s) for s in r.demoted],
            )
            for r in results
        ],
    )


def _shift(shift: TokenShift) -> TokenShiftOut:
    return TokenShiftOut(**asdict(shift), clean_prob=shift.clean_prob)
