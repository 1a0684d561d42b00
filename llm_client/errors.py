"""The LLM client's errors: each says what failed, where, and what to do about it."""

from __future__ import annotations

from errors import ServiceError


class LLMError(ServiceError):
    """An LLM call failed; no result exists (callers must not invent one)."""


class LLMUnavailableError(LLMError):
    """The server kept failing (rate limits, 5xx, timeouts, refused connections) through
    every transport retry."""


class LLMRequestError(LLMError):
    """The server refused the request itself (bad key, unknown model, bad parameters);
    retrying the same request cannot help."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class LLMOutputError(LLMError):
    """The model's replies stayed unusable (not JSON, or not the schema) after every
    re-ask with the error fed back."""

    def __init__(self, message: str, *, last_output: str) -> None:
        super().__init__(message)
        self.last_output = last_output


class LLMLogprobsUnavailableError(LLMError):
    """Log-probabilities were asked for but the server sent none (it does not support
    them for this model); scorers should fall back to reading the text."""
