"""Live LLM activity in progress displays: calls, tokens and the requests waiting on the
server, re-read at every refresh, so a slow server shows as working, not as hung."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from llm_client.meter import LLMActivity, watched


class LLMColumn(ProgressColumn):
    def __init__(self, activity: LLMActivity) -> None:
        super().__init__()
        self.activity = activity

    def render(self, task: Task) -> Text:
        return Text(self.activity.describe(), style="dim")


class WithActivity:
    """A renderable (e.g. the agent's live view) with a last line of elapsed time and
    LLM activity; `inner` is replaced as the run goes on."""

    def __init__(self, inner: RenderableType, activity: LLMActivity) -> None:
        self.inner = inner
        self.activity = activity
        self.started = time.monotonic()

    def __rich__(self) -> RenderableType:
        elapsed = int(time.monotonic() - self.started)
        line = f"{elapsed // 60}:{elapsed % 60:02d} elapsed"
        if llm := self.activity.describe():
            line += f" · {llm}"
        return Group(self.inner, Text(line, style="dim"))


@contextmanager
def llm_progress(title: str, console: Console) -> Iterator[Progress]:
    """A shown progress bar (done of total, elapsed time) with the LLM activity of the
    calls made inside the block."""
    with watched() as activity:
        progress = Progress(
            TextColumn(f"[bold]{title}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            LLMColumn(activity),
            console=console,
        )
        with progress:
            yield progress
