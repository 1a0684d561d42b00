"""`glossator explain N` (run the agent on one feature, live) and `glossator explanation N`
(the stored one)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from cli.common import (
    RESUME_HINT,
    JsonFlag,
    console,
    err_console,
    feature_index,
    print_json,
    user_errors,
)
from errors import UserError
from runtime.runs import checkpointed_graph, drive, store_run, thread_namer
from runtime.settings import Settings, get_settings

if TYPE_CHECKING:
    from agent.state import AgentState
    from runtime.agent import AgentSetup

PlantedFlag = Annotated[bool, typer.Option("--planted", help="Planted (ground-truth) features.")]
SpecOption = Annotated[
    Path | None, typer.Option(exists=True, dir_okay=False, help="Planted spec; implies --planted.")
]


def explain_command(
    feature: Annotated[
        str | None, typer.Argument(help="Feature index (planted: also its id).")
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(
            help='Many at once: "0:200", "3,7,9" (planted: also ids) or "sample:8" (firing ones).'
        ),
    ] = None,
    local: Annotated[
        bool,
        typer.Option("--local", help="With --features: run in this process, not on the workers."),
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="Runs at once with --local.")] = 32,
    planted: PlantedFlag = False,
    spec: SpecOption = None,
    max_rounds: Annotated[int, typer.Option(min=1, help="Rounds of experiments at most.")] = 10,
    max_probes: Annotated[int, typer.Option(min=1, help="Probe texts at most.")] = 60,
    new: Annotated[
        bool, typer.Option("--new", help="Start a new run instead of resuming this one.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Explain a feature (hypotheses, experiments and verdicts, shown live), or many with
    --features: queued for `glossator worker` processes and followed with a progress bar,
    or run here with --local. A run that was interrupted resumes where it stopped."""
    from agent.state import AgentState, Budget
    from cli.explain_many import explain_many
    from runtime.agent import agent_setup

    with user_errors(), llm_failures():
        if (feature is None) == (features is None):
            raise UserError("give one feature, or --features for many (not both)")
        settings = get_settings()
        setup = agent_setup(settings, planted or spec is not None, spec)
        budget = Budget(max_rounds=max_rounds, max_probe_texts=max_probes)
        if features is not None:
            explain_many(settings, setup, features, budget, new, local, concurrency, as_json)
            return
        if local:
            raise UserError("--local goes with --features (one feature always runs here)")
        thread_of = thread_namer(settings, setup, budget, f":{uuid.uuid4().hex[:8]}" if new else "")
        store = setup.deps.store
        assert feature is not None
        index = feature_index(feature, setup.feature_names)
        if store.feature(index).stats.fired_tokens == 0:  # also checks the index
            raise UserError(f"feature {feature} never fired in the evidence: nothing to explain")
        name = feature if setup.feature_names is None else setup.feature_names[index]
        start = AgentState(feature=index, budget=budget)
        final = asyncio.run(_run(settings, setup, start, thread_of(index), name, not as_json))
        reason = store_run(settings, setup, final, thread_of(index), budget)
    if as_json:
        doc = {**final.model_dump(mode="json"), "thread": thread_of(index), "stored": reason}
        print_json(doc)
        return
    console.print(Text(f"\nrun {thread_of(index)} · {reason}", style="dim"))


@contextlib.contextmanager
def llm_failures() -> Iterator[None]:
    """An LLM that kept failing (through the client's retries) ends the run with its
    reason and exit code 1, and no explanation is stored: the stored one stays, and the
    finished steps stay checkpointed, so the same command resumes the run."""
    from llm_client import LLMError

    try:
        yield
    except LLMError as err:
        err_console.print(Text.assemble(("error: ", "bold red"), f"{err}\n{RESUME_HINT}"))
        raise typer.Exit(1) from err


async def _run(
    settings: Settings, setup: AgentSetup, start: AgentState, thread: str, name: str, live: bool
) -> AgentState:
    from rich.live import Live

    from cli.agent_view import render_run
    from cli.llm_progress import WithActivity
    from llm_client import watched

    async with checkpointed_graph(settings, setup) as graph:
        if not live:  # --json: nothing but the final document on stdout
            return await drive(graph, start, thread, on_state=None)
        with watched() as activity, Live(console=console, refresh_per_second=2) as view:
            shown = WithActivity(render_run(start, name), activity)
            view.update(shown)  # redrawn at each refresh: the elapsed time moves on

            def on_state(state: AgentState) -> None:
                shown.inner = render_run(state, name)

            return await drive(graph, start, thread, on_state)


def explanation_command(
    feature: Annotated[str, typer.Argument(help="Feature index (planted: also its id).")],
    planted: PlantedFlag = False,
    spec: SpecOption = None,
    as_json: JsonFlag = False,
) -> None:
    """The stored explanation of a feature (the best run so far) and its run history."""
    from agent.explanations import ExplanationStore
    from runtime.agent import agent_setup
    from runtime.redis_server import connect

    with user_errors():
        settings = get_settings()
        setup = agent_setup(settings, planted or spec is not None, spec)
        index = feature_index(feature, setup.feature_names)
        store = ExplanationStore(connect(settings), setup.subject)
        current = store.current(index)
        if current is None:
            raise UserError(
                f"feature {feature} has no explanation yet; run `glossator explain {feature}`"
            )
        runs = len(store.history(index))
    if as_json:
        print_json({**current.model_dump(mode="json"), "runs": runs})
        return
    ex = current.explanation
    console.print(Text.assemble((f"feature {feature}: ", "bold"), ex.both_sides))
    console.print(Text(f"labels: {'; '.join(ex.labels)}"))
    console.print(
        f"confidence {ex.confidence:.2f} · {ex.stopped_by} · evidence {', '.join(ex.evidence)}"
    )
    console.print(
        f"cost: {ex.cost.llm_calls} LLM calls, {ex.cost.llm_tokens} tokens, "
        f"{ex.cost.probe_texts} probe texts, {ex.cost.seconds:.1f} s · "
        f"{current.explainer} · run {current.run_id} · {runs} run(s) stored"
    )
