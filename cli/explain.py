"""`glossator explain N` (run the agent on one feature, live) and `glossator explanation N`
(the stored one)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from cli.common import (
    JsonFlag,
    console,
    err_console,
    feature_index,
    print_json,
    user_errors,
)
from runtime.settings import Settings, get_settings

if TYPE_CHECKING:
    from agent.state import AgentState, Budget
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
        typer.Option(help='Many at once: "0:200", "3,7,9" or "sample:8" (firing ones).'),
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
            raise ValueError("give one feature, or --features for many (not both)")
        settings = get_settings()
        setup = agent_setup(settings, planted or spec is not None, spec)
        budget = Budget(max_rounds=max_rounds, max_probe_texts=max_probes)
        if features is not None:
            explain_many(settings, setup, features, budget, new, local, concurrency, as_json)
            return
        if local:
            raise ValueError("--local goes with --features (one feature always runs here)")
        thread_of = thread_namer(settings, setup, budget, f":{uuid.uuid4().hex[:8]}" if new else "")
        store = setup.deps.store
        assert feature is not None
        index = feature_index(feature, setup.feature_names)
        if store.feature(index).stats.fired_tokens == 0:  # also checks the index
            raise ValueError(f"feature {feature} never fired in the evidence: nothing to explain")
        name = feature if setup.feature_names is None else setup.feature_names[index]
        start = AgentState(feature=index, budget=budget)
        final = asyncio.run(_run(settings, setup, start, thread_of(index), name, not as_json))
        reason = store_run(settings, setup, final, thread_of(index), budget)
    if as_json:
        doc = {**final.model_dump(mode="json"), "thread": thread_of(index), "stored": reason}
        print_json(doc)
        return
    console.print(Text(f"\nrun {thread_of(index)} · {reason}", style="dim"))


def thread_namer(
    settings: Settings, setup: AgentSetup, budget: Budget, suffix: str = ""
) -> Callable[[int], str]:
    """Feature -> the thread id of its run: the same (subject, evidence, feature, run
    configuration) always names the same run, so the same command (or a redelivered job
    message) resumes it, or finds it finished and stores nothing twice. `suffix` names a
    fresh run instead (`--new`; a job's id)."""
    key = run_key(budget, setup.deps.reasoner.name, settings)
    evidence = setup.deps.store.manifest.evidence_id  # a run depends on the evidence it read
    subject = setup.subject.key

    def thread_of(index: int) -> str:
        return f"explain:{subject}:{evidence}:{index}:{key}{suffix}"

    return thread_of


def run_key(budget: Budget, reasoner: str, settings: Settings) -> str:
    """8 hex digits naming a run's configuration: another budget, reasoner or LLM model
    makes another run, never this one resumed (or, when finished, returned)."""
    model = settings.llm_model if settings.llm_base_url else None
    recipe = f"{budget.model_dump_json()}|{reasoner}|{model or ''}"
    return hashlib.blake2b(recipe.encode(), digest_size=4).hexdigest()


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


RESUME_HINT = "The run's finished steps are saved: run the same command again to resume it."


def report_failures(failed: dict[int, str], names: list[str] | None) -> None:
    """Say which runs of a batch failed and why; exit code 1 when any did."""
    if not failed:
        return
    for index, reason in failed.items():
        name = index if names is None else names[index]
        err_console.print(Text.assemble(("failed: ", "bold red"), f"feature {name}: {reason}"))
    err_console.print(RESUME_HINT)
    raise typer.Exit(1)


def store_run(
    settings: Settings,
    setup: AgentSetup,
    state: AgentState,
    thread: str,
    budget: Budget,
    client: Any = None,
) -> str:
    """Record the run's explanation (through `client`, else a new connection); returns
    what the store decided."""
    from agent.explanations import ExplanationRecord, ExplanationStore
    from runtime.redis_server import connect

    if state.explanation is None:
        raise ValueError(f"the run {thread} ended without an explanation")
    outcome = ExplanationStore(client or connect(settings), setup.subject).record(
        ExplanationRecord(
            explanation=state.explanation,
            run_id=thread,
            explainer=setup.deps.reasoner.name,
            config=budget.model_dump(),
        )
    )
    return outcome.reason


async def drive(
    graph: Any, start: AgentState, thread: str, on_state: Callable[[AgentState], None] | None
) -> AgentState:
    """Run (or resume, or return the finished state of) one thread of the graph."""
    from agent.checkpointer import DURABILITY
    from agent.state import AgentState

    config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": 500}
    saved = await graph.aget_state(config)
    if finished(saved):
        return AgentState.model_validate(saved.values)
    # A node is next: resume from the checkpoint (input None). Else start (again: a run
    # killed before its first step's checkpoint did nothing yet).
    resume = bool(saved.values and saved.next)
    state = AgentState.model_validate(saved.values) if resume else start
    given = None if resume else start
    async for values in graph.astream(given, config, stream_mode="values", durability=DURABILITY):
        state = AgentState.model_validate(values)
        if on_state is not None:
            on_state(state)
    return state


def finished(saved: Any) -> bool:
    """Whether a thread's state snapshot (`graph.aget_state`) is a finished run. Not just
    "nothing next": a run killed right after its input checkpoint shows values and no
    next node too, with its start task still listed (measured with SIGKILL), and
    LangGraph does not resume that one."""
    return bool(saved.values) and not saved.next and not saved.tasks


@contextlib.asynccontextmanager
async def checkpointed_graph(settings: Settings, setup: AgentSetup) -> AsyncIterator[Any]:
    """The agent graph with its Redis checkpointer; the run's connections close after."""
    from agent.checkpointer import async_redis_checkpointer
    from agent.graph import build_graph
    from runtime.redis_server import redis_url

    async with async_redis_checkpointer(redis_url(settings)) as saver:
        try:
            yield build_graph(setup.deps).compile(checkpointer=saver)
        finally:
            await setup.deps.aclose()


async def _run(
    settings: Settings, setup: AgentSetup, start: AgentState, thread: str, name: str, live: bool
) -> AgentState:
    from rich.live import Live

    from cli.agent_view import render_run

    async with checkpointed_graph(settings, setup) as graph:
        if not live:  # --json: nothing but the final document on stdout
            return await drive(graph, start, thread, on_state=None)
        with Live(render_run(start, name), console=console) as view:
            return await drive(graph, start, thread, lambda s: view.update(render_run(s, name)))


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
            raise ValueError(
                f"feature {feature} has no explanation yet; run `glossator explain {feature}`"
            )
        runs = len(store.history(index))
    if as_json:
        print_json({**current.model_dump(mode="json"), "runs": runs})
        return
    ex = current.explanation
    console.print(Text.assemble((f"feature {feature}: ", "bold"), ex.text))
    console.print(Text(f"labels: {'; '.join(ex.labels)}"))
    console.print(
        f"confidence {ex.confidence:.2f} · {ex.stopped_by} · evidence {', '.join(ex.evidence)}"
    )
    console.print(
        f"cost: {ex.cost.llm_calls} LLM calls, {ex.cost.llm_tokens} tokens, "
        f"{ex.cost.probe_texts} probe texts, {ex.cost.seconds:.1f} s · "
        f"{current.explainer} · run {current.run_id} · {runs} run(s) stored"
    )
