"""`glossator explain --features SPEC`: many features at once, with a progress bar and
then a table. By default a job on the queue (`jobs.explain_jobs`), run by `glossator worker`
processes and followed here; with --local in this process, sharing the model (probe runs
coalesce into batched forwards)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cli.common import console, err_console, print_json
from errors import UserError

if TYPE_CHECKING:
    from agent.state import AgentState, Budget, Explanation
    from jobs.explain_jobs import JobStatus, JobStore
    from runtime.agent import AgentSetup
    from runtime.settings import Settings

POLL_S = 0.5  # how often the follower reads the job's progress


def explain_many(
    settings: Settings,
    setup: AgentSetup,
    spec: str,
    budget: Budget,
    new: bool,
    local: bool,
    concurrency: int,
    as_json: bool,
) -> None:
    """The features `spec` names (those that fire), explained, then a table; failures
    are reported after it, with exit code 1."""
    from cli.common import report_failures
    from runtime.runs import store_run, thread_namer

    store = setup.deps.store
    alive = store.firing_features()
    names = setup.feature_names
    chosen = parse_features(spec, alive, store.n_features, names)
    if not local:
        explanations, failed = explain_queued(settings, setup, chosen, budget, new)
        print_table(explanations, names, as_json)
        report_failures(failed, names)
        return
    thread_of = thread_namer(settings, setup, budget, f":{uuid.uuid4().hex[:8]}" if new else "")
    states, failed = run_many(settings, setup, chosen, budget, concurrency, thread_of)
    for state in states:  # the finished runs are kept, whatever failed
        store_run(settings, setup, state, thread_of(state.feature), budget)
    print_table([s.explanation for s in states if s.explanation], names, as_json)
    report_failures(failed, names)


def explain_queued(
    settings: Settings, setup: AgentSetup, features: list[int], budget: Budget, new: bool
) -> tuple[list[Explanation], dict[int, str]]:
    """Submit a job, follow it to its end; the explanations its runs stored, and its
    failures. Ctrl-C stops following, not the job."""
    from jobs.explain_jobs import JobStore, live_workers, submit_explain_job
    from runtime.redis_server import connect

    if not features:
        raise UserError("none of these features fired in the evidence: nothing to explain")
    status = asyncio.run(submit_explain_job(settings, setup, features, budget, new))
    client = connect(settings)
    jobs = JobStore(client)
    err_console.print(f"job {status.id}: {status.total} features queued")
    if not live_workers(client, setup.subject.key):
        err_console.print(
            "[yellow]warning:[/] no worker is listening for these features; start "
            "`glossator worker` (with the same --planted/--spec and settings) or use --local"
        )
    try:
        status = follow(jobs, status)
    except KeyboardInterrupt:
        err_console.print(f"stopped following job {status.id}; the workers go on with it")
        raise typer.Exit(130) from None
    if status.state == "cancelled":
        err_console.print(f"[bold red]cancelled:[/] job {status.id} ({status.done} explained)")
        raise typer.Exit(1)
    return stored_explanations(client, setup, jobs.runs(status.id)), status.failed


def follow(jobs: JobStore, status: JobStatus) -> JobStatus:
    """Poll the job until it is done, failed or cancelled, with a progress bar; a Redis
    that went away (restarting) is waited for."""
    from jobs.queue import REDIS_DOWN

    progress = Progress(
        TextColumn("[bold]explaining"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=err_console,
    )
    with progress:
        bar = progress.add_task("job", total=status.total, note="")
        while status.state in ("queued", "running"):
            time.sleep(POLL_S)
            try:
                status = jobs.status(status.id)
                note = f"[red]{len(status.failed)} failed" if status.failed else ""
            except REDIS_DOWN:
                note = "[yellow]Redis unreachable, waiting"
            progress.update(bar, completed=status.done + len(status.failed), note=note)
    return status


def stored_explanations(client: Any, setup: AgentSetup, runs: dict[int, str]) -> list[Explanation]:
    """The explanations of these (feature, run id) pairs, as stored."""
    from agent.explanations import ExplanationRecord, ExplanationStore

    store = ExplanationStore(client, setup.subject)
    found = []
    for feature, run_id in runs.items():
        raw = client.hget(store.runs_key(feature), run_id)
        if raw is not None:
            found.append(ExplanationRecord.model_validate_json(raw).explanation)
    return found


def parse_features(
    spec: str, alive: list[int], n_features: int, names: list[str] | None = None, seed: int = 0
) -> list[int]:
    """`select_features`, saying which listed features were skipped (never fired)."""
    from identifiers.features import select_features

    selection = select_features(spec, alive, n_features, names, seed)
    if selection.silent:  # nothing to explain: say so rather than fail the whole batch
        shown = ", ".join(str(f) if names is None else names[f] for f in selection.silent[:10])
        err_console.print(f"skipped (never fired in the evidence): {shown}")
    return selection.features


def run_many(
    settings: Settings,
    setup: AgentSetup,
    features: list[int],
    budget: Budget,
    concurrency: int,
    thread_of: Any,
) -> tuple[list[AgentState], dict[int, str]]:
    """The finished runs, and the features whose LLM kept failing (with the reason): one
    failing run does not take the others' results with it. A feature that never fired
    in the explain split is skipped, with why, as one that never fired at all is."""
    from agent.nodes.observe import NothingToExplainError
    from cli.llm_progress import llm_progress
    from llm_client import LLMError
    from runtime.runs import checkpointed_graph, drive

    failed: dict[int, str] = {}

    async def main(progress: Progress) -> list[AgentState]:
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
                    except NothingToExplainError as err:  # skipped, as never-fired ones
                        err_console.print(f"skipped: {err}")
                progress.advance(task)
                return state

            states = await asyncio.gather(*(one(f) for f in features))
            return [s for s in states if s is not None]

    with llm_progress("explaining", err_console) as progress:
        states = asyncio.run(main(progress))
    return states, dict(sorted(failed.items()))


def print_table(explanations: list[Explanation], names: list[str] | None, as_json: bool) -> None:
    rows = []
    for ex in explanations:
        rows.append(
            {
                "feature": ex.feature if names is None else names[ex.feature],
                "explanation": ex.both_sides,
                "output": ex.output_text,
                "confidence": ex.confidence,
                "stopped_by": ex.stopped_by,
                "probe_texts": ex.cost.probe_texts,
                "llm_calls": ex.cost.llm_calls,
                "llm_cached_calls": ex.cost.llm_cached_calls,
                "llm_tokens": ex.cost.llm_tokens,
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
        cached = f" (+{row['llm_cached_calls']} cached)" if row["llm_cached_calls"] else ""
        calls = f"{row['llm_calls']} LLM calls{cached}"
        cost = f"{row['probe_texts']} probes, {calls}, {row['seconds']:.1f} s"
        table.add_row(
            str(row["feature"]), Text(str(row["explanation"])), f"{row['confidence']:.2f}", cost
        )
    console.print(table)
