"""The LLM client layer shared by every LLM-backed reasoner and scorer.

`LLMClient` (and the openai library under it, ~2 s to import) loads on first use, so
importing `agent.llm` for `delimit` or the config stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.llm.config import JsonMode, LLMConfig, LLMUsage
from agent.llm.errors import (
    LLMError,
    LLMLogprobsUnavailableError,
    LLMOutputError,
    LLMRequestError,
    LLMUnavailableError,
)
from agent.llm.meter import metered
from agent.llm.prompting import DATA_NOTE, Message, delimit
from agent.llm.results import TextWithLogprobs, TokenLogprobs

if TYPE_CHECKING:
    from agent.llm.client import LLMClient

__all__ = [
    "DATA_NOTE",
    "JsonMode",
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
]


def __getattr__(name: str) -> Any:
    if name == "LLMClient":
        from agent.llm.client import LLMClient

        return LLMClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
