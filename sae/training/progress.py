"""What a run shows while it trains: a rich progress bar, or log lines without one."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
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

log = logging.getLogger(__name__)

_SMOOTHING = 0.9  # exponential moving average of the shown per-batch numbers


@dataclass
class RunningStats:
    """Smoothed per-batch numbers of the run (what the bar and the metadata report)."""

    loss: float = float("nan")
    explained_variance: float = float("nan")
    l0: float = float("nan")
    aux: float = 0.0
    dead_fraction: float = 0.0
    _seen: int = field(default=0, repr=False)

    def update(self, loss: float, ev: float, l0: float, aux: float, dead: float) -> None:
        if self._seen == 0:
            self.loss, self.explained_variance, self.l0, self.aux = loss, ev, l0, aux
        else:
            a = _SMOOTHING
            self.loss = a * self.loss + (1 - a) * loss
            self.explained_variance = a * self.explained_variance + (1 - a) * ev
            self.l0 = a * self.l0 + (1 - a) * l0
            self.aux = a * self.aux + (1 - a) * aux
        self.dead_fraction = dead
        self._seen += 1

    def line(self, tokens_per_s: float) -> str:
        return (
            f"loss {self.loss:.4f} · EV {self.explained_variance:.3f} · L0 {self.l0:.1f} · "
            f"dead {self.dead_fraction:.1%} · {tokens_per_s:,.0f} tok/s"
        )


class TrainingProgress:
    """A context manager updated once per step: a bar on a terminal; without one (a log
    file, a CI job) a line on stderr every ~10% of the steps; `show=False` logs them."""

    def __init__(self, total_steps: int, start_step: int, show: bool, label: str) -> None:
        self.total = total_steps
        self.show = show
        self._label = label
        self._start_step = start_step
        self._tokens = 0
        self._t0 = time.perf_counter()
        self._next_log = start_step + max(1, total_steps // 10)
        self._progress: Progress | None = None
        self._console = Console(stderr=True)  # stdout stays clean for --json output
        self._lines = show and not self._console.is_terminal
        if show and self._console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("steps"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[stats]}"),
                console=self._console,
            )
            self._task = self._progress.add_task(
                label, total=total_steps, completed=start_step, stats=""
            )

    def __enter__(self) -> TrainingProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    @property
    def tokens_per_s(self) -> float:
        return self._tokens / max(time.perf_counter() - self._t0, 1e-9)

    def advance(self, step: int, n_tokens: int, stats: RunningStats) -> None:
        self._tokens += n_tokens
        line = stats.line(self.tokens_per_s)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, stats=line)
        elif step >= self._next_log or step == self.total:
            if self._lines:
                self._console.print(
                    f"{self._label}: step {step}/{self.total}: {line}",
                    markup=False,
                    highlight=False,
                )
            else:
                log.info("step %d/%d: %s", step, self.total, line)
            self._next_log = step + max(1, self.total // 10)
