"""What a chat stores and streams: threads, messages (with the experiments a turn ran),
the events of a turn, and the errors a caller can map to a reply (4xx in the HTTP API).

Stored values are versioned pydantic JSON, like every Redis value in glossator.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from agent.state import Cost, Expect, Outcome
from errors import GlossatorError, ServiceError, UserError

CHAT_VERSION = 1


class ChatError(GlossatorError):
    """Base of the chat's errors; each message says what to do about it."""


class ChatInputError(ChatError, UserError):
    """The user's message cannot be handled as sent (empty, too long, too many texts,
    a hypothesis that names nothing to test)."""


class UnknownThreadError(ChatError, UserError, LookupError):
    """No such thread (for this subject and feature)."""


class UnknownFeatureError(ChatError, UserError, LookupError):
    """The feature is not in the evidence the agent reads."""


class ChatStoreError(ChatError, ServiceError):
    """Redis is unreachable, or a stored chat value is malformed."""


class Intent(StrEnum):
    TEST = "test"  # run the user's texts through the feature
    HYPOTHESIS = "hypothesis"  # design, run and judge experiments for a claim
    QUESTION = "question"  # answer from the stored explanation and the evidence
    STEER = "steer"  # turn the feature up (or down) and report what the model then says


def new_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class ChatExperiment(BaseModel):
    """One probe run in a turn: the text, and the feature's activation on each token."""

    id: str  # "E1", "E2", ... within the message
    text: str
    outcome: Outcome  # tokens, per-token activations, max, peak, fired (>= tau)
    expect: Expect | None = None  # set when the run tested a hypothesis
    agrees: bool | None = None  # whether the outcome matched `expect`


class ChatVerdict(BaseModel):
    """The judgement of a hypothesis the user proposed, from the experiments it cites."""

    hypothesis: str  # the user's words
    tested: str  # what the experiments tested (offline: the words, literally)
    status: Literal["confirmed", "refuted", "undecided"]
    reason: str
    cites: list[str]  # ids of the experiments that decided it
    suggestion: str | None = None  # a wording the evidence supports better, when refuted


class ChatMessage(BaseModel):
    version: int = CHAT_VERSION
    id: str = Field(default_factory=new_id)
    role: Literal["user", "agent"]
    text: str
    created_at: datetime = Field(default_factory=_now)
    reply_to: str | None = None  # agent messages: the user message answered
    intent: Intent | None = None  # agent messages: what the request was understood as
    threshold: float | None = None  # tau, when experiments ran
    experiments: list[ChatExperiment] = Field(default_factory=list)
    verdict: ChatVerdict | None = None
    failed: bool = False  # the turn failed; `text` says why (experiments that ran are kept)
    cost: Cost | None = None  # probe texts and LLM usage of the turn


class ChatThread(BaseModel):
    version: int = CHAT_VERSION
    id: str = Field(default_factory=new_id)
    feature: int = Field(ge=0)
    subject: str  # `Subject.key` of what the feature belongs to
    created_at: datetime = Field(default_factory=_now)
    title: str = ""  # the first user message (shortened) unless given
    # The API key id that started it over HTTP. None: started before owners were
    # recorded (or with no key, from Python): only an admin key may write into it.
    owner: str | None = None


# -- events of one turn, in order: understood, experiment*, verdict?, answer, done|error --


class UnderstoodEvent(BaseModel):
    type: Literal["understood"] = "understood"
    message_id: str  # the stored user message
    intent: Intent
    plan: str  # what the agent will do, in words
    texts: list[str] = Field(default_factory=list)  # the test texts it read, if any


class ExperimentEvent(BaseModel):
    type: Literal["experiment"] = "experiment"
    experiment: ChatExperiment
    threshold: float


class VerdictEvent(BaseModel):
    type: Literal["verdict"] = "verdict"
    verdict: ChatVerdict


class AnswerEvent(BaseModel):
    type: Literal["answer"] = "answer"
    text: str


class DoneEvent(BaseModel):
    type: Literal["done"] = "done"
    message: ChatMessage  # the agent's reply, as stored


class ErrorEvent(BaseModel):
    type: Literal["error"] = "error"
    error: str
    message: ChatMessage | None  # the stored failure note; None if it could not be stored


ChatEvent = Annotated[
    UnderstoodEvent | ExperimentEvent | VerdictEvent | AnswerEvent | DoneEvent | ErrorEvent,
    Field(discriminator="type"),
]
