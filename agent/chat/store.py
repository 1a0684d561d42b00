"""Chat threads in Redis, per (subject, feature). Threads and messages live only in Redis,
so they survive a restart of the process that wrote them.

Keys (`{s}` is `Subject.key`; values are versioned pydantic JSON):
- `glossator:chat:{s}:{feature}:threads`: a sorted set of thread ids, scored by creation time;
- `glossator:chat:{s}:thread:{id}`: the thread's metadata (`ChatThread`);
- `glossator:chat:{s}:thread:{id}:messages`: a list of its messages (`ChatMessage`), oldest first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from pydantic import BaseModel, ValidationError

from agent.chat.models import (
    CHAT_VERSION,
    ChatMessage,
    ChatStoreError,
    ChatThread,
    UnknownThreadError,
    new_id,
)
from agent.explanations import Subject
from identifiers import redis_keys
from identifiers.redis_keys import decoded

PREFIX = redis_keys.CHAT
TITLE_CHARS = 80
_THREAD_ID = re.compile(r"[0-9a-f]{32}")  # what `new_id` makes; anything else is unknown

M = TypeVar("M", bound=BaseModel)


class ChatStore:
    """The chat threads of one subject's features. `client` is a sync redis client."""

    def __init__(self, client: Any, subject: Subject) -> None:
        self.client = client
        self.subject = subject
        self._base = f"{PREFIX}:{subject.key}"

    def threads_key(self, feature: int) -> str:
        return f"{self._base}:{feature}:threads"

    def thread_key(self, thread_id: str) -> str:
        return f"{self._base}:thread:{thread_id}"

    def messages_key(self, thread_id: str) -> str:
        return f"{self.thread_key(thread_id)}:messages"

    def create(
        self,
        feature: int,
        title: str = "",
        owner: str | None = None,
        thread_id: str | None = None,
    ) -> ChatThread:
        """A new, empty thread about `feature`, owned by the API key id `owner`, under
        `thread_id` when the caller chose it (`new_id()`). The caller checks that the
        feature exists: see `ChatAgent.start_thread`."""
        thread = ChatThread(
            id=thread_id or new_id(),
            feature=feature,
            subject=self.subject.key,
            title=title[:TITLE_CHARS],
            owner=owner,
        )
        with self._redis(), self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.thread_key(thread.id), thread.model_dump_json())
            pipe.zadd(self.threads_key(feature), {thread.id: thread.created_at.timestamp()})
            pipe.execute()
        return thread

    def threads(self, feature: int) -> list[ChatThread]:
        """The feature's threads, newest first."""
        with self._redis():
            ids = [decoded(i) for i in self.client.zrevrange(self.threads_key(feature), 0, -1)]
            raws = self.client.mget([self.thread_key(i) for i in ids]) if ids else []
        return [
            self._parse(ChatThread, raw, self.thread_key(i))
            for i, raw in zip(ids, raws, strict=True)
            if raw is not None
        ]

    def thread(self, thread_id: str) -> ChatThread:
        """The thread's metadata; UnknownThreadError when there is none."""
        if not _THREAD_ID.fullmatch(thread_id):
            raise UnknownThreadError(f"no chat thread {thread_id!r}: thread ids are 32 hex digits")
        key = self.thread_key(thread_id)
        with self._redis():
            raw = self.client.get(key)
        if raw is None:
            raise UnknownThreadError(
                f"no chat thread {thread_id} for this model and SAE; start one first"
            )
        return self._parse(ChatThread, raw, key)

    def messages(self, thread_id: str) -> list[ChatMessage]:
        """The thread's messages, oldest first."""
        self.thread(thread_id)  # an unknown thread is an error, not an empty list
        key = self.messages_key(thread_id)
        with self._redis():
            raws = self.client.lrange(key, 0, -1)
        return [self._parse(ChatMessage, raw, f"{key}[{i}]") for i, raw in enumerate(raws)]

    def append(self, thread_id: str, message: ChatMessage) -> None:
        """Add a message at the end of the thread. A thread without a title takes the
        first user message's (shortened) text as its title."""
        thread = self.thread(thread_id)
        with self._redis(), self.client.pipeline(transaction=True) as pipe:
            pipe.rpush(self.messages_key(thread_id), message.model_dump_json())
            if not thread.title and message.role == "user":
                titled = thread.model_copy(update={"title": _title(message.text)})
                pipe.set(self.thread_key(thread_id), titled.model_dump_json())
            pipe.execute()

    @staticmethod
    def _parse(model: type[M], raw: bytes | str, where: str) -> M:
        try:
            parsed = model.model_validate_json(raw)
        except ValidationError as error:
            first = error.errors()[0]
            raise ChatStoreError(
                f"the chat value at {where} is malformed ({first['msg']}); delete or rewrite it"
            ) from None
        version = getattr(parsed, "version", CHAT_VERSION)
        if version != CHAT_VERSION:
            raise ChatStoreError(
                f"the chat value at {where} has version {version}, this glossator reads "
                f"version {CHAT_VERSION}"
            )
        return parsed

    @contextmanager
    def _redis(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise ChatStoreError(
                f"Redis is unreachable ({error}); is the server running, and is its URL right?"
            ) from error
        except redis.ResponseError as error:
            raise ChatStoreError(
                f"Redis refused a chat-store command ({error}); are other programs writing "
                f"under {self._base}?"
            ) from error


def _title(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= TITLE_CHARS else one_line[: TITLE_CHARS - 1] + "…"
