"""`LLMClient`: validated JSON and text completions from any OpenAI-compatible server,
with a concurrency limit, usage accounting and a Redis response cache."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TypeVar

import openai
import redis
from pydantic import BaseModel, ValidationError

from llm_client.cache import CachedReply, CachedToken, ResponseCache, cache_key
from llm_client.config import JsonMode, LLMConfig, LLMUsage
from llm_client.errors import (
    LLMLogprobsUnavailableError,
    LLMOutputError,
    LLMRequestError,
    LLMUnavailableError,
)
from llm_client.meter import asking, charge
from llm_client.prompting import (
    Message,
    describe_validation_error,
    extract_json_text,
    feedback_messages,
    schema_instruction,
    with_system_note,
)
from llm_client.results import TextWithLogprobs, TokenLogprobs
from llm_client.retry import is_retryable, request_error
from llm_client.transport import ChatTransport, Completion, Transport

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

# The next JSON mode to try when a server rejects `response_format` with a 400/422.
_DOWNGRADE: dict[JsonMode, JsonMode] = {"json_schema": "json_object", "json_object": "off"}


class LLMClient:
    """One client per endpoint, shared by every concurrent run that uses it.

    `usage` totals everything; `usage_by_purpose` splits it by each call's `purpose`;
    a call's `usage=` argument also receives that call's share (e.g. one agent run's own
    cost). `cache` is a redis client for the response cache (None: no cache); identical
    requests get the stored reply, so pass `cache=False` where fresh samples are wanted
    (temperature > 0). `transport` replaces the HTTP one (e.g. a `LocalTransport`; its
    config's base_url then names it in cache keys). Use `async with LLMClient(...)` or
    call `aclose()`.
    """

    def __init__(
        self,
        config: LLMConfig,
        cache: redis.Redis | None = None,
        transport: ChatTransport | None = None,
    ) -> None:
        self.config = config
        self.usage = LLMUsage()
        self.usage_by_purpose: dict[str, LLMUsage] = {}
        self._cache = ResponseCache(cache, config.cache_ttl_s)
        self._transport: ChatTransport = transport if transport is not None else Transport(config)
        self._json_mode: JsonMode = config.json_mode

    @property
    def json_mode(self) -> JsonMode:
        """The JSON mode in use: the config's, or a lower one the server accepted."""
        return self._json_mode

    async def complete_json(
        self,
        messages: Sequence[Message],
        schema: type[T],
        *,
        purpose: str,
        usage: LLMUsage | None = None,
        cache: bool = True,
        max_tokens: int | None = None,
    ) -> T:
        """The model's reply as a validated `schema` instance (`max_tokens` overrides the
        config's, e.g. for a reply that grows with the items it answers for).

        Invalid JSON or a schema violation is fed back to the model and re-asked, at most
        `max_output_retries` times, then LLMOutputError. Transport failures are retried
        (LLMUnavailableError when they persist); a refused request raises LLMRequestError.
        """
        spent = LLMUsage()
        try:
            limit = max_tokens if max_tokens is not None else self.config.max_tokens
            return await self._complete_json(list(messages), schema, purpose, spent, cache, limit)
        finally:
            self._record(purpose, spent, usage)

    async def complete_text(
        self,
        messages: Sequence[Message],
        *,
        purpose: str,
        max_tokens: int | None = None,
        usage: LLMUsage | None = None,
        cache: bool = True,
    ) -> str:
        """The model's free-text reply (`max_tokens` overrides the config's)."""
        result = await self._text(list(messages), purpose, max_tokens, None, usage, cache)
        return result.text

    async def complete_logprobs(
        self,
        messages: Sequence[Message],
        *,
        purpose: str,
        top_logprobs: int = 10,
        max_tokens: int = 1,
        usage: LLMUsage | None = None,
        cache: bool = True,
    ) -> TextWithLogprobs:
        """The reply's text and, per generated token, the `top_logprobs` most likely
        alternatives (for expected values over digit tokens, ask for 1-2 tokens).
        Raises LLMLogprobsUnavailableError when the server sends no log-probabilities."""
        return await self._text(list(messages), purpose, max_tokens, top_logprobs, usage, cache)

    async def models(self) -> list[str]:
        """The model ids the server lists (`GET /models`): a cheap reachability check."""
        if not isinstance(self._transport, Transport):
            return [self.config.model]  # an in-process model serves only itself
        try:
            page = await self._transport.openai.models.list()
        except openai.APIError as exc:
            if is_retryable(exc):
                raise LLMUnavailableError(
                    f"LLM server {self.config.base_url} did not answer GET /models "
                    f"({exc.message}); check that it is running and reachable"
                ) from exc
            raise request_error(exc, self.config, "list models") from exc
        return [m.id for m in page.data]

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _complete_json(
        self,
        messages: list[Message],
        schema: type[T],
        purpose: str,
        spent: LLMUsage,
        use: bool,
        max_tokens: int | None,
    ) -> T:
        key = self._key("json", messages, max_tokens, None, schema)
        hit = await self._cache.get(key) if use else None
        if hit is not None:
            try:
                value = schema.model_validate_json(extract_json_text(hit.content))
            except ValidationError:
                log.warning("cached reply no longer fits %s; asking again", schema.__name__)
            else:
                spent.cached_calls += 1
                return value
        prompt = messages
        if self.config.schema_in_prompt:
            prompt = with_system_note(messages, schema_instruction(schema))
        conversation, content, problem = prompt, "", ""
        for attempt in range(self.config.max_output_retries + 1):
            if attempt:
                spent.retries += 1
            reply = await self._create_json(conversation, schema, purpose, spent, max_tokens)
            content = reply.content or ""
            try:
                value = schema.model_validate_json(extract_json_text(content))
            except ValidationError as exc:
                problem = describe_validation_error(exc)
                log.info("invalid %r output (attempt %d):\n%s", purpose, attempt + 1, problem)
                truncated = reply.finish_reason == "length"
                # Only the latest bad reply goes back: the prompt stays short.
                conversation = prompt + feedback_messages(content, problem, truncated)
                continue
            if use:
                await self._cache.put(key, _cached(reply))
            return value
        raise LLMOutputError(
            f"model {self.config.model!r} gave no valid {schema.__name__} for the {purpose!r} "
            f"call in {self.config.max_output_retries + 1} attempts; last problem:\n{problem}\n"
            "Try a stronger model, a larger max_tokens, or more max_output_retries.",
            last_output=content,
        )

    async def _create_json(
        self,
        messages: list[Message],
        schema: type[BaseModel],
        purpose: str,
        spent: LLMUsage,
        max_tokens: int | None,
    ) -> Completion:
        """One completion in the best JSON mode the server accepts, stepping down (and
        keeping the lower mode once it works) when the server rejects `response_format`."""
        mode = self._json_mode
        while True:
            try:
                reply = await self._create(
                    messages,
                    purpose,
                    spent,
                    response_format=_response_format(mode, schema),
                    max_tokens=max_tokens,
                )
            except LLMRequestError as exc:
                # A 400 about something else fails in every mode and ends as that 400.
                if mode == "off" or exc.status_code not in (400, 422):
                    raise
                log.warning("server refused response_format %r: %s", mode, exc)
                mode = _DOWNGRADE[mode]
                spent.retries += 1
                continue
            if mode != self._json_mode:
                log.warning("using json_mode %r with %s from now on", mode, self.config.base_url)
                self._json_mode = mode
            return reply

    async def _create(
        self, messages: list[Message], purpose: str, spent: LLMUsage, **options: Any
    ) -> Completion:
        with asking(purpose):  # shown as waiting by progress displays (meter.watched)
            return await self._transport.create(messages, purpose, spent, **options)

    async def _text(
        self,
        messages: list[Message],
        purpose: str,
        max_tokens: int | None,
        top_logprobs: int | None,
        usage: LLMUsage | None,
        use: bool,
    ) -> TextWithLogprobs:
        spent = LLMUsage()
        max_tokens = max_tokens if max_tokens is not None else self.config.max_tokens
        key = self._key("text", messages, max_tokens, top_logprobs, None)
        try:
            hit = await self._cache.get(key) if use else None
            if hit is not None:
                spent.cached_calls += 1
                return _from_cached(hit)
            reply = await self._create(
                messages, purpose, spent, max_tokens=max_tokens, top_logprobs=top_logprobs
            )
            if reply.content is None:
                raise LLMOutputError(
                    f"{self.config.base_url} sent no text for the {purpose!r} call "
                    f"(finish_reason {reply.finish_reason!r})",
                    last_output="",
                )
            if top_logprobs is not None and not reply.tokens:
                raise LLMLogprobsUnavailableError(
                    f"{self.config.base_url} sent no log-probabilities for model "
                    f"{self.config.model!r}; use a server and model that support `logprobs` "
                    "(OpenAI, vLLM, llama.cpp) or score from the text instead"
                )
            if use:
                await self._cache.put(key, _cached(reply))
            return TextWithLogprobs(reply.content, reply.tokens or [])
        finally:
            self._record(purpose, spent, usage)

    def _key(
        self,
        kind: str,
        messages: list[Message],
        max_tokens: int | None,
        top_logprobs: int | None,
        schema: type[BaseModel] | None,
    ) -> str:
        described = None
        if schema is not None:
            described = {"name": schema.__name__, "json_schema": schema.model_json_schema()}
        return cache_key(
            {
                "kind": kind,
                "base_url": self.config.base_url,
                "model": self.config.model,
                "messages": messages,
                "schema": described,
                "temperature": self.config.temperature,
                "max_tokens": max_tokens,
                "top_logprobs": top_logprobs,
            }
        )

    def _record(self, purpose: str, spent: LLMUsage, sink: LLMUsage | None) -> None:
        self.usage.add(spent)
        self.usage_by_purpose.setdefault(purpose, LLMUsage()).add(spent)
        if sink is not None:
            sink.add(spent)
        charge(spent)


def _response_format(mode: JsonMode, schema: type[BaseModel]) -> dict[str, Any] | None:
    if mode == "json_object":
        return {"type": "json_object"}
    if mode == "json_schema":
        # strict=False: pydantic schemas rarely meet OpenAI's strict-mode rules.
        name = re.sub(r"[^A-Za-z0-9_-]", "_", schema.__name__)[:64]
        body = {"name": name, "schema": schema.model_json_schema(), "strict": False}
        return {"type": "json_schema", "json_schema": body}
    return None


def _cached(reply: Completion) -> CachedReply:
    tokens = None
    if reply.tokens is not None:
        tokens = [CachedToken(token=t.token, logprob=t.logprob, top=t.top) for t in reply.tokens]
    return CachedReply(
        content=reply.content or "",
        tokens=tokens,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
    )


def _from_cached(hit: CachedReply) -> TextWithLogprobs:
    tokens = [TokenLogprobs(t.token, t.logprob, dict(t.top)) for t in hit.tokens or []]
    return TextWithLogprobs(hit.content, tokens)
