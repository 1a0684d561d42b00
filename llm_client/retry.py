"""Which openai-library failures are worth retrying, how long to wait, and what to tell
the user when a request is refused for good."""

from __future__ import annotations

import email.utils
import random
import time
from typing import TYPE_CHECKING

from llm_client.config import LLMConfig
from llm_client.errors import LLMRequestError

if TYPE_CHECKING:
    import openai

# Request timeout, lock conflict, rate limit: the same request may succeed later
# (the statuses the openai library itself retries), plus every 5xx.
_RETRYABLE_STATUS = frozenset({408, 409, 429})


def is_retryable(exc: openai.APIError) -> bool:
    import openai

    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRYABLE_STATUS or exc.status_code >= 500
    return False


def retry_after_s(exc: openai.APIError) -> float | None:
    """The server's requested wait: `retry-after-ms`, or `retry-after` in seconds or as
    an HTTP date; None when absent or unreadable."""
    import openai

    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            pass
    value = headers.get("retry-after")
    parsed = email.utils.parsedate_tz(value) if value else None
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())


def backoff_delay(config: LLMConfig, attempt: int, exc: openai.APIError) -> float:
    """Seconds to wait before retry number `attempt + 1`: the server's Retry-After when
    it gives one (capped), else exponential backoff with jitter so that many clients
    hit by the same outage do not come back in lockstep."""
    jitter = random.uniform(0.0, config.backoff_base_s)
    requested = retry_after_s(exc)
    if requested is not None:
        return min(requested, config.max_retry_after_s) + jitter
    ceiling = min(config.backoff_max_s, config.backoff_base_s * 2.0**attempt)
    return ceiling / 2 + random.uniform(0.0, ceiling / 2)


def request_error(exc: openai.APIError, config: LLMConfig, purpose: str) -> LLMRequestError:
    """An LLMRequestError saying why the server refused and what to check."""
    import openai

    status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
    where = f"LLM server {config.base_url} (model {config.model!r}) refused the {purpose!r} call"
    if status in (401, 403):
        hint = "check the API key (and that it may use this model)"
    elif status == 404:
        hint = "check the model name, and that base_url ends in /v1 (e.g. http://host:8000/v1)"
    elif isinstance(exc, openai.APIResponseValidationError):
        hint = "the answer was not a chat completion: is base_url an OpenAI-compatible API?"
    else:
        hint = "the request's parameters are not accepted by this server or model"
    code = f"HTTP {status}: " if status is not None else ""
    return LLMRequestError(f"{where}: {code}{exc.message}; {hint}", status_code=status)
