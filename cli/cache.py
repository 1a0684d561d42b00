"""`glossator cache build|list|clear`: the corpus read once into token and activation
caches, which evidence passes then read instead of running the model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import JsonFlag, console, err_console, print_json, user_errors
from runtime.progress import StepProgress
from runtime.settings import get_settings

cache_app = typer.Typer(
    help="Read a corpus once into token and activation caches (evidence passes reuse them).",
    no_args_is_help=True,
)


def _size(n_bytes: int) -> str:
    return (
        f"{n_bytes / (1 << 30):.2f} GiB" if n_bytes >= 1 << 30 else f"{n_bytes / (1 << 20):.1f} MiB"
    )


@cache_app.command("build")
def build_command(
    corpus: Annotated[
        Path | None,
        typer.Option(exists=True, help="Corpus (txt/JSONL/Parquet/folder); default: the default."),
    ] = None,
    hookpoint: Annotated[
        str | None, typer.Option(help="Where to read, e.g. layers.6 (default: the SAE's own).")
    ] = None,
    max_gb: Annotated[
        float | None,
        typer.Option(
            min=1e-9,
            help="Most GiB the activations may take (default GLOSSATOR_ACTIVATION_CACHE_GB).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Tokenize the corpus once and read the hookpoint's activations of all of it once."""
    from probes.activation_cache import build_activation_cache
    from runtime import caches, loaders
    from runtime.evidence import corpus_texts

    with user_errors():
        settings = get_settings()
        subject = loaders.open_subject_model(settings)
        sae = loaders.open_sae(settings, subject)
        name = loaders.sae_hookpoint(settings, sae, hookpoint)
        texts = corpus_texts(settings, corpus, subject.tokenizer)
        tokens = caches.corpus_tokens(settings, texts, subject.tokenizer)
        reader = caches.pass_reader(settings, subject, name)
        plan = caches.activation_plan(settings, reader, tokens, max_gb)
        cut = "" if plan.n_texts == plan.corpus_texts else " (the size bound cuts the corpus)"
        err_console.print(
            f"activation cache: {plan.n_tokens:,} of {plan.corpus_tokens:,} tokens "
            f"({plan.n_texts:,} of {plan.corpus_texts:,} texts){cut}, {_size(plan.bytes)} "
            f"in {plan.folder}" + (" (already built)" if plan.done else "")
        )
        with StepProgress("reading activations", plan.n_tokens, show=not plan.done) as bar:
            cache = build_activation_cache(plan, reader, tokens, on_tokens=bar.advance)
    summary = {
        "folder": str(cache.folder),
        "hookpoint": name,
        "texts": cache.n_texts,
        "tokens": cache.n_tokens,
        "corpus_texts": plan.corpus_texts,
        "corpus_tokens": plan.corpus_tokens,
        "bytes": plan.bytes,
        "token_cache": str(tokens.folder),
    }
    if as_json:
        print_json(summary)
        return
    for key, value in summary.items():
        console.print(
            f"[bold]{key}[/]: {value:,}" if isinstance(value, int) else f"[bold]{key}[/]: {value}"
        )


@cache_app.command("list")
def list_command(as_json: JsonFlag = False) -> None:
    """The caches on disk, what they hold and their size."""
    from runtime.caches import cache_listing

    with user_errors():
        rows = cache_listing(get_settings())
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no caches yet: `glossator cache build` makes them")
        return
    table = Table("kind", "key", "texts", "tokens", "size", "state", "of")
    for row in rows:
        table.add_row(
            row["kind"],
            row["key"],
            f"{row.get('texts', 0):,}",
            f"{row.get('tokens', 0):,}",
            _size(row["bytes"]),
            row["state"],
            row.get("what", ""),
        )
    console.print(table)


@cache_app.command("clear")
def clear_command(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask first.")] = False,
) -> None:
    """Delete every cache (they are rebuilt when needed; evidence and SAEs stay)."""
    from runtime.caches import remove_caches

    with user_errors():
        settings = get_settings()
        if not yes and not typer.confirm(
            f"delete every cache under {settings.data_dir / 'cache'}?"
        ):
            raise typer.Exit(1)
        freed = remove_caches(settings)
    console.print(f"freed {_size(freed)}")
