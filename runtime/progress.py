"""Progress of a long read on stderr: a bar on a terminal, and without one (a log file, a
CI job) a plain line every half minute, so a long step never looks hung."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

LINE_EVERY_SECONDS = 30.0


class StepProgress:
    """`with StepProgress("reading activations", total) as p: p.advance(n)`.
    show=False shows nothing (e.g. under --json in a script)."""

    def __init__(
        self,
        label: str,
        total: int | None,
        unit: str = "tokens",
        show: bool = True,
        console: Console | None = None,
        every: float = LINE_EVERY_SECONDS,
    ) -> None:
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.console = console or Console(stderr=True)
        self.done = 0
        self._t0 = self._last_line = time.monotonic()
        self._bar: Progress | None = None
        self._lines = show and not self.console.is_terminal
        if show and self.console.is_terminal:
            self._bar = Progress(
                TextColumn(f"[bold]{label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(f"{unit} · {{task.fields[rate]}}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._task = self._bar.add_task(label, total=total, rate="-")

    def __enter__(self) -> StepProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self._lines and exc is None and self.done:  # nothing read: nothing to say
            self._print_line("done")

    def rate(self) -> str:
        per_s = self.done / max(time.monotonic() - self._t0, 1e-9)
        return f"{per_s:,.0f} {self.unit}/s"

    def advance(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=self.rate())
        elif self._lines and (
            self.done == n or time.monotonic() - self._last_line >= self.every
        ):  # the first step, then one line per `every` seconds
            self._print_line()

    def _print_line(self, state: str = "") -> None:
        self._last_line = time.monotonic()
        elapsed = int(self._last_line - self._t0)
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        of = f" of {self.total:,}" if self.total is not None else ""
        tail = f", {state}" if state else ""
        self.console.print(
            f"{self.label}: {self.done:,}{of} {self.unit}{share}, {self.rate()}, "
            f"{elapsed // 60}:{elapsed % 60:02d} elapsed{tail}",
            markup=False,
            highlight=False,
        )
