"""The LLM client layer shared by every LLM-backed reasoner and scorer.

`LLMClient` (and the openai library under it, ~2 s to import) loads on first use, so
importing `llm_client` for `delimit` or the config stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llm_client.config import JsonMode, LLMConfig, LLMUsage
from llm_client.errors import (
    LLMError,
    LLMLogprobsUnavailableError,
    LLMOutputError,
    LLMRequestError,
    LLMUnavailableError,
)
from llm_client.meter import LLMActivity, metered, watched
from llm_client.prompting import DATA_NOTE, Message, delimit
from llm_client.results import TextWithLogprobs, TokenLogprobs

if TYPE_CHECKING:
    from llm_client.client import LLMClient

__all__ = [
    "DATA_NOTE",
    "JsonMode",
    "LLMActivity",
    "LLMClient",
    "LLMConfig",
    "LLMError",
    "LLMLogprobsUnavailableError",
    "LLMOutputError",
    "LLMRequestError",
    "LLMUnavailableError",
    "LLMUsage",
    "Message",
    "TextWithLogprobs",
    "TokenLogprobs",
    "delimit",
    "metered",
    "watched",
]


def __getattr__(name: str) -> Any:
    if name == "LLMClient":
        from llm_client.client import LLMClient

        return LLMClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
