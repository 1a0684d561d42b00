"""Per-task LLM usage meters.

`with metered() as spent:` collects the usage of every `LLMClient` call made inside the
block, by this task and the tasks it starts. Meters live in a context variable, so
concurrent blocks (agent runs, scorings of different features) never count each
other's calls, even on one shared client. Blocks nest: a call charges every open one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from llm_client.config import LLMUsage

_meters: ContextVar[tuple[LLMUsage, ...]] = ContextVar("glossator_llm_meters", default=())


@contextmanager
def metered() -> Iterator[LLMUsage]:
    spent = LLMUsage()
    token = _meters.set((*_meters.get(), spent))
    try:
        yield spent
    finally:
        _meters.reset(token)


def charge(spent: LLMUsage) -> None:
    """Add one call's usage to every meter open in this context (the client calls it)."""
    for meter in _meters.get():
        meter.add(spent)
