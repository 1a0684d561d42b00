"""Per-task LLM usage meters, and live activity for progress displays.

`with metered() as spent:` collects the usage of every `LLMClient` call made inside the
block, by this task and the tasks it starts. Meters live in a context variable, so
concurrent blocks (agent runs, scorings of different features) never count each
other's calls, even on one shared client. Blocks nest: a call charges every open one.

`with watched() as activity:` does the same and also counts the requests waiting on
the server right now, by purpose, so a progress line can show that a slow server is
still working (a 135M model on 2 cores takes seconds a call).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from llm_client.config import LLMUsage

_meters: ContextVar[tuple[LLMUsage, ...]] = ContextVar("glossator_llm_meters", default=())
_waiting: ContextVar[tuple[Counter[str], ...]] = ContextVar("glossator_llm_waiting", default=())


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


@dataclass
class LLMActivity:
    """The LLM calls of a `watched()` block: finished (usage) and waiting (by purpose)."""

    usage: LLMUsage
    waiting: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        """'' before the first call (a run without an LLM shows nothing)."""
        u = self.usage
        if not (u.calls or u.cached_calls or any(self.waiting.values())):
            return ""
        text = f"LLM {u.calls} calls, {u.input_tokens + u.output_tokens:,} tokens"
        if u.cached_calls:
            text += f", {u.cached_calls} cached"
        if u.retries:
            text += f", {u.retries} retries"
        now = [f"{p} x{n}" if n > 1 else p for p, n in sorted(self.waiting.items()) if n > 0]
        return text + (f" · waiting on {', '.join(now)}" if now else "")


@contextmanager
def watched() -> Iterator[LLMActivity]:
    with metered() as spent:
        activity = LLMActivity(spent)
        token = _waiting.set((*_waiting.get(), activity.waiting))
        try:
            yield activity
        finally:
            _waiting.reset(token)


@contextmanager
def asking(purpose: str) -> Iterator[None]:
    """Count one request to the server as waiting, in every watch open in this context."""
    counters = _waiting.get()
    for waiting in counters:
        waiting[purpose] += 1
    try:
        yield
    finally:
        for waiting in counters:
            waiting[purpose] -= 1
