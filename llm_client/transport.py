"""One chat completion over HTTP with the openai library: our retry policy (backoff,
Retry-After), the concurrency limit, and per-call token accounting."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import openai
from openai.types.chat import ChatCompletion

from llm_client.config import LLMConfig, LLMUsage
from llm_client.errors import LLMRequestError, LLMUnavailableError
from llm_client.prompting import Message
from llm_client.results import TokenLogprobs
from llm_client.retry import backoff_delay, is_retryable, request_error

log = logging.getLogger(__name__)

# A request that timed out is retried with twice the timeout, up to this many times the
# configured one.
MAX_TIMEOUT_GROWTH = 4


@dataclass
class Completion:
    """The parts of a chat completion the client uses."""

    content: str | None
    finish_reason: str
    tokens: list[TokenLogprobs] | None  # None unless log-probabilities were sent
    input_tokens: int
    output_tokens: int


class ChatTransport(Protocol):
    """What `LLMClient` needs from a transport: `Transport` (HTTP) or an in-process
    model (`llm_client.local.LocalTransport`)."""

    async def create(
        self,
        messages: list[Message],
        purpose: str,
        spent: LLMUsage,
        *,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        top_logprobs: int | None = None,
    ) -> Completion: ...

    async def aclose(self) -> None: ...


class Transport:
    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self._semaphore = asyncio.Semaphore(config.concurrency)
        # max_retries=0: the library must not retry behind our back; our policy (with
        # its accounting and Retry-After cap) is the only one that applies.
        self.openai = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=config.api_key.get_secret_value(),
            timeout=config.timeout_s,
            max_retries=0,
        )

    async def create(
        self,
        messages: list[Message],
        purpose: str,
        spent: LLMUsage,
        *,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        top_logprobs: int | None = None,
    ) -> Completion:
        """One completion, retried on 429, 5xx, timeouts and connection errors.

        Raises LLMUnavailableError when those persist, LLMRequestError (with the HTTP
        status) when the server refuses the request itself.
        """
        cfg = self.config
        kwargs: dict[str, Any] = {"model": cfg.model, "messages": messages}
        kwargs["temperature"] = cfg.temperature
        if max_tokens is not None:
            kwargs[cfg.max_tokens_field] = max_tokens
        if response_format is not None:
            kwargs["response_format"] = response_format
        if top_logprobs is not None:
            kwargs.update(logprobs=True, top_logprobs=top_logprobs)
        last: openai.APIError | None = None
        timeout = cfg.timeout_s
        for attempt in range(cfg.max_retries + 1):
            if last is not None:
                delay = backoff_delay(cfg, attempt - 1, last)
                log.info("retrying %r in %.2f s after: %s", purpose, delay, last.message)
                spent.retries += 1
                await asyncio.sleep(delay)  # outside the semaphore: waiting is not in flight
            try:
                async with self._semaphore:
                    completion = await self._create_within(kwargs, timeout, purpose)
            except openai.APIError as exc:
                if not is_retryable(exc):
                    raise request_error(exc, cfg, purpose) from exc
                last = exc
                if isinstance(exc, openai.APITimeoutError):
                    timeout = min(2 * timeout, cfg.timeout_s * MAX_TIMEOUT_GROWTH)
                continue
            return self._parse(completion, spent, purpose)
        assert last is not None
        raise LLMUnavailableError(
            f"LLM server {cfg.base_url} (model {cfg.model!r}) kept failing for the {purpose!r} "
            f"call: {cfg.max_retries + 1} attempts, last error: {last.message}. Check that the "
            "server is up and reachable, or raise GLOSSATOR_LLM_TIMEOUT (timeout_s) / max_retries."
        ) from last

    async def _create_within(
        self, kwargs: dict[str, Any], timeout: float, purpose: str
    ) -> ChatCompletion:
        """One request with `timeout` seconds. A timed-out request may still be running
        on the server (a single-slot llama.cpp queues the next one behind it): the slot
        this client holds is kept for `timeout` more seconds, so that neither the retry
        nor this client's other requests queue behind it, and the caller retries with a
        longer timeout (a slow server is slow every time, not by chance)."""
        try:
            completion: ChatCompletion = await self.openai.chat.completions.create(
                **kwargs, timeout=timeout
            )
        except openai.APITimeoutError:
            log.warning(
                "the %r call got no answer from %s in %.0f s (GLOSSATOR_LLM_TIMEOUT); "
                "waiting as long again before asking again",
                purpose,
                self.config.base_url,
                timeout,
            )
            await asyncio.sleep(timeout)
            raise
        return completion

    def _parse(self, completion: ChatCompletion, spent: LLMUsage, purpose: str) -> Completion:
        # A wrong base_url (a web page, another API) can answer 200 with anything.
        if not isinstance(completion, ChatCompletion) or not getattr(completion, "choices", None):
            raise LLMRequestError(
                f"{self.config.base_url} answered the {purpose!r} call with something that is "
                f"not a chat completion ({str(completion)[:200]!r}); is base_url an "
                "OpenAI-compatible endpoint ending in /v1?"
            )
        usage = completion.usage
        n_in = usage.prompt_tokens if usage else 0
        n_out = usage.completion_tokens if usage else 0
        spent.calls += 1
        spent.input_tokens += n_in
        spent.output_tokens += n_out
        spent.cost += self.config.cost(n_in, n_out)
        choice = completion.choices[0]
        tokens = None
        if choice.logprobs is not None and choice.logprobs.content:
            tokens = [_token(t) for t in choice.logprobs.content]
        return Completion(choice.message.content, choice.finish_reason, tokens, n_in, n_out)

    async def aclose(self) -> None:
        await self.openai.close()


def _token(item: Any) -> TokenLogprobs:
    top: dict[str, float] = {}
    for alt in item.top_logprobs or []:
        top[alt.token] = max(alt.logprob, top.get(alt.token, float("-inf")))
    return TokenLogprobs(token=item.token, logprob=item.logprob, top=top)
