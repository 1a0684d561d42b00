"""`glossator explain --features SPEC`: many features at once, in one process, sharing
the model (probe runs coalesce into batched forwards), with a progress bar and a table."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from api.cli_common import console, err_console, print_json

if TYPE_CHECKING:
    from agent.state import AgentState, Budget
    from api.agent_runtime import AgentSetup
    from api.settings import Settings


def parse_features(spec: str, alive: list[int], n_features: int) -> list[int]:
    """ "0:200" (a range), "3,7,9" (a list) or "sample:8" (a seeded sample of the features
    that fire in the evidence). Features that never fired in the evidence are left out."""
    spec = spec.strip()
    if spec.startswith("sample:"):
        count = int(spec.removeprefix("sample:"))
        return sorted(random.Random(0).sample(alive, min(count, len(alive))))
    if ":" in spec:
        lo, hi = (int(part) if part else None for part in spec.split(":", 1))
        chosen = range(n_features)[lo:hi]
        firing = set(alive)
        return [f for f in chosen if f in firing]
    picked = [int(part) for part in spec.split(",") if part.strip()]
    bad = [f for f in picked if not 0 <= f < n_features]
    if bad:
        raise ValueError(f"unknown feature {bad[0]}: valid indices are 0..{n_features - 1}")
    firing = set(alive)
    silent = [f for f in picked if f not in firing]
    if silent:  # nothing to explain: say so rather than fail the whole batch
        shown = ", ".join(map(str, silent[:10]))
        err_console.print(f"skipped (never fired in the evidence): {shown}")
    return [f for f in picked if f in firing]


def run_many(
    settings: Settings,
    setup: AgentSetup,
    features: list[int],
    budget: Budget,
    concurrency: int,
    thread_of: Any,
) -> tuple[list[AgentState], dict[int, str]]:
    """The finished runs, and the features whose LLM kept failing (with the reason):
    one failing run does not take the others' results with it."""
    from agent.llm import LLMError
    from api.cli_explain import checkpointed_graph, drive

    progress = Progress(
        TextColumn("[bold]explaining"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    )

    failed: dict[int, str] = {}

    async def main() -> list[AgentState]:
        from agent.state import AgentState

        gate = asyncio.Semaphore(concurrency)
        task = progress.add_task("explain", total=len(features))
        async with checkpointed_graph(settings, setup) as graph:

            async def one(feature: int) -> AgentState | None:
                state = None
                async with gate:
                    start = AgentState(feature=feature, budget=budget)
                    try:
                        state = await drive(graph, start, thread_of(feature), on_state=None)
                    except LLMError as err:
                        failed[feature] = str(err)
                progress.advance(task)
                return state

            states = await asyncio.gather(*(one(f) for f in features))
            return [s for s in states if s is not None]

    with progress:
        states = asyncio.run(main())
    return states, dict(sorted(failed.items()))


def print_table(states: list[AgentState], names: list[str] | None, as_json: bool) -> None:
    rows = []
    for state in states:
        ex = state.explanation
        if ex is None:
            continue
        rows.append(
            {
                "feature": state.feature if names is None else names[state.feature],
                "explanation": ex.text,
                "confidence": ex.confidence,
                "stopped_by": ex.stopped_by,
                "probe_texts": ex.cost.probe_texts,
                "llm_calls": ex.cost.llm_calls,
                "seconds": ex.cost.seconds,
            }
        )
    if as_json:
        print_json({"explanations": rows})
        return
    table = Table(title=f"{len(rows)} features explained")
    for column in ("feature", "explanation", "confidence", "cost"):
        table.add_column(column, overflow="fold")
    for row in rows:
        cost = f"{row['probe_texts']} probes, {row['llm_calls']} LLM calls, {row['seconds']:.1f} s"
        table.add_row(
            str(row["feature"]), Text(str(row["explanation"])), f"{row['confidence']:.2f}", cost
        )
    console.print(table)
