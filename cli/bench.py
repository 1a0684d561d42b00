"""`glossator bench`: explainers side by side on the same features and the same held-out
examples, scored by the field's metrics; `glossator bench report RUN` re-renders a run.

A run's id comes from what defines it (evidence, features, explainers, scorers, judges,
seeds, budget, score corpus), so running the same command again resumes it: finished
explanations and scores are read back from Redis, only the rest is computed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import Progress, TextColumn, TimeElapsedColumn

from cli.common import console, err_console, user_errors
from errors import UserError
from runtime.settings import get_settings

if TYPE_CHECKING:
    from evals.core import Explained
    from evals.results import BenchResults
    from evals.runner import Bench
    from probes.evidence.store import EvidenceStore
    from runtime.settings import Settings

bench_app = typer.Typer(
    help="Score explainers side by side (detection, fuzzing, simulation, ...).",
    invoke_without_command=True,
    no_args_is_help=False,
)


@bench_app.callback()
def bench_command(
    ctx: typer.Context,
    features: Annotated[
        str | None,
        typer.Option(
            help='"sample:200", "0:100" or "3,7,9"; planted: also ids. Default: all planted.'
        ),
    ] = None,
    explainers: Annotated[
        str, typer.Option(help="agent, oneshot, toptokens, tokenstats, logitlens.")
    ] = "agent,toptokens",
    scorers: Annotated[
        str,
        typer.Option(
            help="detection, fuzzing, simulation, embedding, generative, predictive, truth, "
            "intruder (no explanation: needs an LLM judge), intruder-explained, output "
            "(the promoted tokens an output predicate names, by steering), output-pick "
            "(the judge picks the feature's steered continuations among distractors)."
        ),
    ] = "detection,fuzzing,simulation,embedding,generative,predictive",
    judges: Annotated[
        str,
        typer.Option(
            help="Who reads explanations, first that can: predicate (runs an explanation's "
            "predicate), llm (the configured server), local (in-process SmolLM2). auto: "
            "predicate, then llm when a server is configured."
        ),
    ] = "auto",
    planted: Annotated[
        bool, typer.Option("--planted", help="The shipped planted features.")
    ] = False,
    spec: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Planted spec; implies --planted."),
    ] = None,
    neuronpedia: Annotated[
        Path | None, typer.Option(exists=True, help="Also score a Neuronpedia export (JSON).")
    ] = None,
    delphi: Annotated[
        Path | None,
        typer.Option(exists=True, file_okay=False, help="Also score delphi explanations."),
    ] = None,
    oneshot_llm: Annotated[
        str, typer.Option(help="LLM of the oneshot explainer: llm (configured server) or local.")
    ] = "llm",
    per_quantile: Annotated[int, typer.Option(min=1, help="Held-out examples per quantile.")] = 2,
    non_activating: Annotated[int, typer.Option(min=1, help="Held-out quiet examples.")] = 20,
    score_corpus: Annotated[
        Path | None,
        typer.Option(
            help="Draw the scoring examples from this corpus (all of it held out: .txt, "
            ".jsonl, .parquet, a saved HF dataset, or a folder of them) instead of the "
            "evidence's score split; its evidence is built once, then reused."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the feature sample and examples.")] = 0,
    max_rounds: Annotated[int, typer.Option(min=1, help="Agent rounds at most.")] = 10,
    concurrency: Annotated[int, typer.Option(min=1, help="Features at once.")] = 4,
    run: Annotated[
        str | None, typer.Option(help="Run name (default: derived from the options).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write results to this JSON file.")
    ] = None,
) -> None:
    """Run (or resume) a benchmark, then write its report."""
    if ctx.invoked_subcommand is not None:
        return
    from cli.llm_progress import llm_progress
    from runtime.agent import agent_setup
    from runtime.bench import BenchOptions, plan_bench
    from runtime.bench_options import BenchOptionError

    with user_errors():
        settings = get_settings()
        setup = agent_setup(settings, planted or spec is not None, spec)
        chosen = _features(setup.deps.store, features, setup.feature_names, seed)
        options = BenchOptions(
            features=chosen,
            explainers=explainers.split(","),
            scorers=scorers.split(","),
            judges=None if judges.strip() == "auto" else judges.split(","),
            per_quantile=per_quantile,
            non_activating=non_activating,
            seed=seed,
            max_rounds=max_rounds,
            oneshot_llm=oneshot_llm,
            score_corpus=score_corpus,
            run=run,
        )
        try:
            with _corpus_progress(score_corpus is not None) as on_chunk:
                bench = plan_bench(
                    settings, setup, options, _imported(neuronpedia, delphi), concurrency,
                    on_chunk,
                )  # fmt: skip
        except BenchOptionError as err:
            raise UserError(str(err)) from err
        store, run_id = setup.deps.store, bench.config.run_id
        with llm_progress(f"bench {run_id}", err_console) as progress:
            task = progress.add_task("features", total=len(bench.config.features))
            asyncio.run(_run(bench, lambda _: progress.advance(task)))
        report = _write(settings, bench.results, store)
        if json_out is not None:
            json_out.write_text((report.parent / "results.json").read_text())
    _show(report)


@contextmanager
def _corpus_progress(shown: bool) -> Iterator[Callable[[int, int], None] | None]:
    """Tokens read by the score corpus's evidence pass (instant when it is cached)."""
    if not shown:
        yield None
        return
    progress = Progress(
        TextColumn("[bold]score corpus evidence"),
        TextColumn("{task.completed:,} tokens"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    with progress:
        task = progress.add_task("tokens", total=None)
        yield lambda read, _: progress.update(task, completed=read)


async def _run(bench: Bench, advance: Callable[[int], None]) -> None:
    from evals.runner import run_bench

    try:
        await run_bench(bench, advance)
    finally:
        for explainer in bench.explainers:
            deps = getattr(explainer, "deps", None)
            if deps is not None:
                await deps.aclose()


@bench_app.command("report")
def report_command(
    run: Annotated[str, typer.Argument(help="The run id (see `glossator bench list`).")],
) -> None:
    """Re-render a run's report (Markdown, JSON, plots) from Redis."""
    with user_errors():
        settings = get_settings()
        results = _results(settings, run)
        config = results.config()
        if config is None:
            raise UserError(f"no benchmark run {run!r}; `glossator bench list` shows the runs")
        from runtime.evidence import evidence_folder, open_store

        store = open_store(settings, evidence_folder(settings, config.evidence_id, None, False))
        report = _write(settings, results, store)
    _show(report)


@bench_app.command("list")
def list_command() -> None:
    """The benchmark runs stored in Redis, oldest first."""
    from evals.results import list_runs
    from runtime.redis_server import connect

    with user_errors():
        for run_id in list_runs(connect(get_settings())):
            console.print(run_id)


def _show(report: Path) -> None:
    """The report's Markdown as it is (it reads well as text, and pipes cleanly)."""
    console.print(report.read_text(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"[dim]report: {report}[/]")


def _features(
    store: EvidenceStore, spec: str | None, names: list[str] | None, seed: int
) -> list[int]:
    from cli.explain_many import parse_features
    from identifiers.features import parse_feature

    alive = store.firing_features()
    if spec is None:
        if names is None:
            raise UserError('say which features: --features "sample:200" (or 0:100, 3,7,9)')
        return alive
    if names is not None and not spec.startswith("sample:") and ":" not in spec:
        return [parse_feature(p, names) for p in spec.split(",") if p.strip()]
    return parse_features(spec, alive, store.n_features, seed=seed)


def _imported(neuronpedia: Path | None, delphi: Path | None) -> dict[str, dict[int, Explained]]:
    from evals.explainers.imported import load_delphi, load_neuronpedia

    found: dict[str, dict[int, Explained]] = {}
    if neuronpedia is not None:
        found["neuronpedia"] = load_neuronpedia(neuronpedia)
    if delphi is not None:
        found["delphi"] = load_delphi(delphi)
    return found


def _results(settings: Settings, run_id: str) -> BenchResults:
    from evals.results import BenchResults
    from runtime.redis_server import connect

    return BenchResults(connect(settings), run_id)


def _write(settings: Settings, results: BenchResults, store: EvidenceStore) -> Path:
    from evals.report import write_report
    from runtime.bench import bench_dir

    config = results.config()
    assert config is not None
    densities = {f: store.stats(f).density for f in config.features}
    return write_report(
        bench_dir(settings, config.run_id),
        config,
        results.scores(),
        results.explanations(),
        results.failures(),
        densities,
    )
