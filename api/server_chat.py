"""Chat about one feature over HTTP. Threads live in Redis (agent/chat), so they survive
a restart of the service.

- POST /features/{feature}/chat: a new thread (key needed; a key starts at most
  settings.max_chat_threads_per_key, 429 beyond), owned by that key;
- GET /features/{feature}/chat: the feature's threads, newest first;
- GET /chat/{thread_id}: a thread and its messages, oldest first;
- POST /chat/{thread_id}/messages: send a message (a question, a hypothesis, or test
  texts in quotes); the answer streams as Server-Sent Events: understood, experiment
  (each probe run as it lands), verdict, answer, then done or error. Only the thread's
  owner or an admin key may write into it (403).

A turn runs to the end and stores its reply even if the client goes away mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from agent.chat import (
    MAX_MESSAGE_CHARS,
    ChatAgent,
    ChatError,
    ChatEvent,
    ChatInputError,
    ChatMessage,
    ChatStore,
    ChatStoreError,
    ChatThread,
    UnknownThreadError,
    new_id,
)
from api.server_auth import OWNER_ONLY, ApiKey, check_owner, error_docs, quota_error, read_access
from api.services import Services, services
from runtime import quotas
from runtime.apikeys import TooManyRuns

router = APIRouter(tags=["chat"])


class NewThread(BaseModel):
    title: str = Field(default="", max_length=200)


class ChatPost(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)


class ThreadView(BaseModel):
    thread: ChatThread
    messages: list[ChatMessage]


def _store(request: Request, svc: Services) -> ChatStore:
    return ChatStore(request.app.state.redis, svc.setup.subject)


@contextlib.contextmanager
def _chat_errors() -> Any:
    """The chat's own errors as the 4xx (or 503) that says what to fix."""
    try:
        yield
    except ChatInputError as error:
        raise HTTPException(422, str(error)) from error
    except (UnknownThreadError, LookupError) as error:
        raise HTTPException(404, str(error).strip("'\"")) from error
    except ChatStoreError as error:
        raise HTTPException(503, str(error)) from error
    except ChatError as error:
        raise HTTPException(422, str(error)) from error


@router.post("/features/{feature}/chat", status_code=201, summary="Start a chat thread")
def new_thread(
    feature: str,
    request: Request,
    svc: Annotated[Services, Depends(services)],
    key: ApiKey,
    body: NewThread | None = None,
) -> ChatThread:
    index = svc.feature(feature)
    client, thread_id = request.app.state.redis, new_id()
    limit = request.app.state.settings.max_chat_threads_per_key
    try:  # counted first, so two requests at once cannot both slip under the limit
        quotas.add_thread(client, key.id, thread_id, time.time(), limit)
    except quotas.QuotaExceeded as error:
        raise quota_error(error) from error
    with _chat_errors():
        return ChatAgent(svc.setup.deps).start_thread(
            _store(request, svc), index, (body or NewThread()).title, key.id, thread_id
        )


@router.get(
    "/features/{feature}/chat",
    summary="A feature's chat threads, newest first",
    dependencies=[Depends(read_access)],
)
def list_threads(
    feature: str, request: Request, svc: Annotated[Services, Depends(services)]
) -> list[ChatThread]:
    index = svc.feature(feature)
    with _chat_errors():
        return _store(request, svc).threads(index)


@router.get(
    "/chat/{thread_id}",
    summary="A chat thread and its messages",
    dependencies=[Depends(read_access)],
)
def get_thread(
    thread_id: str, request: Request, svc: Annotated[Services, Depends(services)]
) -> ThreadView:
    store = _store(request, svc)
    with _chat_errors():
        return ThreadView(thread=store.thread(thread_id), messages=store.messages(thread_id))


@router.post(
    "/chat/{thread_id}/messages",
    summary="Send a message; the agent's experiments and answer stream back (SSE)",
    response_class=EventSourceResponse,
    responses=error_docs(e403=OWNER_ONLY),
)
async def send_message(
    thread_id: str,
    body: ChatPost,
    request: Request,
    svc: Annotated[Services, Depends(services)],
    key: ApiKey,
) -> EventSourceResponse:
    store = _store(request, svc)
    with _chat_errors():
        thread = store.thread(thread_id)
    check_owner(key, thread.owner, f"chat thread {thread_id}", "write into")
    turn = f"chat:{thread_id}:{uuid.uuid4().hex[:8]}"
    slots = svc.runs.slots
    try:
        await asyncio.to_thread(slots.acquire, key.id, turn)
    except TooManyRuns as error:
        raise HTTPException(429, str(error)) from error
    try:
        with _chat_errors():
            events = await ChatAgent(svc.setup.deps).respond(
                store, thread.id, thread.feature, body.text
            )
    except BaseException:
        slots.release(key.id, turn)
        raise
    queue: asyncio.Queue[ChatEvent | None] = asyncio.Queue()

    async def run_turn() -> None:
        """The whole turn, client or not; its events go to the queue."""
        try:
            async for event in events:
                await queue.put(event)
        finally:
            await queue.put(None)
            slots.release(key.id, turn)

    svc.runs.keep(asyncio.create_task(run_turn()))
    return EventSourceResponse(_drain(queue), ping=15)


async def _drain(queue: asyncio.Queue[ChatEvent | None]) -> AsyncIterator[ServerSentEvent]:
    while (event := await queue.get()) is not None:
        yield ServerSentEvent(data=event.model_dump_json(), event=event.type)
