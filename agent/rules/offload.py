"""Where synthesis runs. Synthesis is pure Python, so in one process it holds the
interpreter while the model's forward passes and every other run wait; in a helper
process it runs beside them on another core. `Offload(0)` runs it in place (tests, one
feature at a time); the batch paths ask for helpers."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Offload:
    def __init__(self, processes: int = 0) -> None:
        if processes < 0:
            raise ValueError(f"synthesis processes must be >= 0, got {processes}")
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)`, in a helper process when there are any (fn and args must pickle)."""
        if self.processes == 0:
            return fn(*args)
        if self._pool is None:  # spawned, not forked: the parent runs torch threads
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.processes, mp_context=context)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
