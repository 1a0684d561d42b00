"""The `glossator` command line. Every command that shows data also takes --json."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.table import Table
from rich.text import Text

from cli.common import (
    JsonFlag,
    console,
    err_console,
    print_json,
    read_text,
    set_verbose,
    shown_token,
    user_errors,
)
from cli.faults import undecodable_argument
from cli.features import sae_activations
from errors import UserError
from runtime import loaders
from runtime.settings import Settings, get_settings


class GlossatorApp(typer.Typer):
    """The app; a fault that escapes a command's own `user_errors()` (an undecodable
    argument, a failure while printing) is reported the same way, never as a traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            with user_errors():
                if not args and (problem := undecodable_argument(sys.argv[1:])):
                    raise UserError(problem)
                return super().__call__(*args, **kwargs)
        except (click.exceptions.Exit, typer.Exit) as exit_:  # how user_errors() ends
            sys.exit(exit_.exit_code)


app = GlossatorApp(
    help="Explain and test the features of sparse autoencoders.", no_args_is_help=True
)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    set_verbose(verbose)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # weight-loading bars of a 1 s load are noise on stderr
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


@app.command()
def prepare(as_json: JsonFlag = False) -> None:
    """Prepare the embedded default once: the model, the default corpus, the corpus read
    once into its activation cache, the default SAE trained on it and the evidence of
    every feature over the whole corpus."""
    import time

    from probes.default_corpus import load_default_corpus
    from runtime.default_sae import prepare_default_cache, prepare_default_sae

    seconds: dict[str, float] = {}

    def timed(phase: str, started: float) -> None:
        seconds[phase] = round(time.monotonic() - started, 1)

    with user_errors():
        settings = get_settings()
        started = time.monotonic()
        err_console.print("preparing the subject model (first time: ~30 s)")
        model_path = loaders.subject_model_path(settings)
        tokenizer = loaders.open_tokenizer(settings)
        timed("model", started)
        started = time.monotonic()
        corpus = load_default_corpus(loaders.default_corpus_dir(settings), tokenizer=tokenizer)
        timed("corpus", started)
        # The default SAE belongs to the default model; a configured model brings its own.
        sae_dir = evidence_id = None
        if not settings.model:
            started = time.monotonic()
            prepare_default_cache(settings)
            timed("read_activations", started)
            started = time.monotonic()
            sae_dir = prepare_default_sae(settings)
            timed("train_sae", started)
            started = time.monotonic()
            evidence_id = _prepare_evidence(settings)
            timed("evidence", started)
    summary = {
        "data_dir": str(settings.data_dir),
        "model": str(model_path),
        "corpus": str(loaders.default_corpus_dir(settings)),
        "corpus_train_texts": len(corpus.train),
        "corpus_heldout_texts": len(corpus.heldout),
        "corpus_tokens": corpus.info.n_tokens,
        "sae": str(sae_dir or settings.sae or "none: set GLOSSATOR_SAE for this model"),
        "evidence": evidence_id or "none: run `glossator evidence build`",
        "seconds": seconds,
    }
    if as_json:
        print_json(summary)
        return
    for key, value in summary.items():
        console.print(f"[bold]{key}[/]: {value}")


def _prepare_evidence(settings: Settings) -> str:
    """Evidence of the default SAE over the whole default corpus, from its activation
    cache (the model is not run again)."""
    from probes.evidence.config import EvidenceConfig
    from runtime.evidence import run_job, sae_job
    from runtime.progress import StepProgress

    job = sae_job(settings, None, None)
    with StepProgress("building feature evidence", job.n_tokens) as bar:
        manifest, _, _ = run_job(
            settings, job, EvidenceConfig(), on_chunk=lambda _, n: bar.advance(n)
        )
    return manifest.evidence_id


@app.command()
def activations(
    text: Annotated[str, typer.Argument(help="The text, or '-' to read stdin.")],
    hookpoint: Annotated[str | None, typer.Option(help="e.g. layers.6, layers.6.mlp")] = None,
    features: Annotated[
        str | None,
        typer.Option(help="SAE features to show as a heat view per token, e.g. 12,40."),
    ] = None,
    top: Annotated[
        int | None, typer.Option(min=1, help="Show the N strongest SAE features of each token.")
    ] = None,
    sae: Annotated[
        Path | None,
        typer.Option(exists=True, help="SAE folder; default: GLOSSATOR_SAE, else the default SAE."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Per-token activations at a hookpoint (norms), or of SAE features (--features, --top).

    --features 12,40 shows those features as a heat view over the text plus a table;
    --top N the N strongest features of each token; --sae alone: the top 5.
    """
    if features is not None or top is not None or sae is not None:
        sae_activations(text, hookpoint, features, top, sae, as_json)
        return
    from probes.reader import ActivationReader

    with user_errors():
        settings = get_settings()
        text = read_text(text)
        name = hookpoint or settings.hookpoint
        subject = loaders.open_subject_model(settings)
        reader = ActivationReader(
            subject, [name], context_length=settings.context_length, overflow=settings.overflow
        )
        result = reader.read([text])[0]
    norms = result.acts_TD[name].norm(dim=-1).tolist()
    if as_json:
        print_json(
            {
                "model": subject.name,
                "hookpoint": name,
                "d_model": subject.d_model,
                "tokens": [
                    {"text": t.text, "start": t.start, "end": t.end, "norm": n}
                    for t, n in zip(result.tokens, norms, strict=True)
                ],
            }
        )
        return
    top_norm = max(norms, default=1.0) or 1.0
    table = Table(title=f"{subject.name} · {name} · activation norm per token")
    table.add_column("#", justify="right", style="dim")
    table.add_column("token")
    table.add_column("chars", style="dim")
    table.add_column("norm", justify="right")
    table.add_column("")
    for i, (token, norm) in enumerate(zip(result.tokens, norms, strict=True)):
        bar = Text("█" * max(1, round(24 * norm / top_norm)), style="cyan")
        table.add_row(
            str(i), shown_token(token.text), f"{token.start}-{token.end}", f"{norm:.2f}", bar
        )
    console.print(table)


@app.command()
def planted(
    text: Annotated[str, typer.Argument(help="The text, or '-' to read stdin.")],
    spec: Annotated[
        Path | None, typer.Option(help="Planted feature spec (JSONL); default: the shipped one.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Per-token activations of planted (ground-truth) features."""
    from probes.planted import PlantedFeatures, default_spec_path, load_planted_spec

    with user_errors():
        settings = get_settings()
        text = read_text(text)
        source = PlantedFeatures(
            load_planted_spec(spec or default_spec_path()), loaders.open_tokenizer(settings)
        )
        result = source.activations([text])[0]
    names = source.feature_names
    rows = [
        {
            "text": token.text,
            "start": token.start,
            "end": token.end,
            "activations": {names[f]: v for f, v in sorted(active.items())},
        }
        for token, active in zip(result.tokens, result.by_token(), strict=True)
    ]
    if as_json:
        print_json({"tokens": rows})
        return
    table = Table(title="planted feature activations per token")
    table.add_column("#", justify="right", style="dim")
    table.add_column("token")
    table.add_column("chars", style="dim")
    table.add_column("active features")
    for i, (token, active) in enumerate(zip(result.tokens, result.by_token(), strict=True)):
        shown = ", ".join(f"[green]{names[f]}[/]={v:g}" for f, v in sorted(active.items()))
        table.add_row(str(i), shown_token(token.text), f"{token.start}-{token.end}", shown)
    console.print(table)


# Sub-app registered last: its modules may import helpers from this one.
from cli.sae import sae_app  # noqa: E402
from cli.sae_eval import eval_command  # noqa: E402

sae_app.command("eval")(eval_command)
app.add_typer(sae_app, name="sae")

from cli.explain import explain_command, explanation_command  # noqa: E402

app.command("explain")(explain_command)
app.command("explanation")(explanation_command)

from cli.worker import worker_command  # noqa: E402

app.command("worker")(worker_command)

from cli.cache import cache_app  # noqa: E402
from cli.evidence import evidence_app, feature_command  # noqa: E402

app.add_typer(evidence_app, name="evidence")
app.add_typer(cache_app, name="cache")
app.command("feature")(feature_command)

from cli.steer import steer_command  # noqa: E402

app.command("steer")(steer_command)

from cli.bench import bench_app  # noqa: E402

app.add_typer(bench_app, name="bench")

from cli.apikey import apikey_app  # noqa: E402
from cli.llm import llm_app  # noqa: E402
from cli.serve import serve_command  # noqa: E402

app.add_typer(apikey_app, name="apikey")
app.add_typer(llm_app, name="llm")
app.command("serve")(serve_command)


if __name__ == "__main__":
    app()
