"""The `glossator` command line. Every command that shows data also takes --json."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from api import runtime
from api.settings import SettingsError, get_settings

app = typer.Typer(
    help="Explain and test the features of sparse autoencoders.", no_args_is_help=True
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # paths in messages stay whole

MAX_TEXT_CHARS = 100_000
DEFAULT_TOP = 5  # features per token shown by `activations --sae` without --features/--top
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document instead.")]


def _user_errors() -> tuple[type[Exception], ...]:
    from api.redis_server import RedisUnavailableError
    from probes.corpus import CorpusFormatError
    from probes.hookpoints import UnknownHookpointError
    from probes.model import ModelLoadError
    from probes.planted import PlantedSpecError

    return (
        SettingsError,
        ModelLoadError,
        UnknownHookpointError,
        PlantedSpecError,
        CorpusFormatError,
        RedisUnavailableError,
        ValueError,
    )


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn errors the user can fix into a one-paragraph message and exit code 2."""
    try:
        yield
    except _user_errors() as err:
        err_console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(2) from err


def _read_text(text: str) -> str:
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        raise ValueError("the text is empty; give some text, or '-' to read it from stdin")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(
            f"the text has {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}: "
            "split it, or use a corpus for bulk work"
        )
    return text


def _print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")


def _shown(token: str) -> str:
    return token.replace("\n", "\\n").replace("\t", "\\t")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # weight-loading bars of a 1 s load are noise on stderr
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


@app.command()
def prepare(as_json: JsonFlag = False) -> None:
    """Prepare the embedded default: dequantized model cache and the default corpus."""
    from probes.default_corpus import load_default_corpus

    with user_errors():
        settings = get_settings()
        with console.status("preparing the subject model (first time: ~30 s)"):
            model_path = runtime.subject_model_path(settings)
        tokenizer = runtime.open_tokenizer(settings)
        corpus = load_default_corpus(runtime.default_corpus_dir(settings), tokenizer=tokenizer)
    summary = {
        "data_dir": str(settings.data_dir),
        "model": str(model_path),
        "corpus": str(runtime.default_corpus_dir(settings)),
        "corpus_train_texts": len(corpus.train),
        "corpus_heldout_texts": len(corpus.heldout),
        "corpus_tokens": corpus.info.n_tokens,
    }
    if as_json:
        _print_json(summary)
        return
    for key, value in summary.items():
        console.print(f"[bold]{key}[/]: {value}")


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
        _sae_activations(text, hookpoint, features, top, sae, as_json)
        return
    from probes.reader import ActivationReader

    with user_errors():
        settings = get_settings()
        text = _read_text(text)
        name = hookpoint or settings.hookpoint
        subject = runtime.open_subject_model(settings)
        reader = ActivationReader(
            subject, [name], context_length=settings.context_length, overflow=settings.overflow
        )
        result = reader.read([text])[0]
    norms = result.acts_TD[name].norm(dim=-1).tolist()
    if as_json:
        _print_json(
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
        table.add_row(str(i), _shown(token.text), f"{token.start}-{token.end}", f"{norm:.2f}", bar)
    console.print(table)


def _sae_activations(
    text: str,
    hookpoint: str | None,
    features: str | None,
    top: int | None,
    sae_path: Path | None,
    as_json: bool,
) -> None:
    """`activations --features/--top`: SAE feature activations per token."""
    from probes.sae_runner import SAEFeatureSource

    with user_errors():
        settings = get_settings(**({"sae": str(sae_path)} if sae_path else {}))
        text = _read_text(text)
        chosen = _parse_features(features) if features is not None else []
        if features is None and top is None:
            top = DEFAULT_TOP
        subject = runtime.open_subject_model(settings)
        sae = runtime.open_sae(settings, subject)
        name = runtime.sae_hookpoint(settings, sae, hookpoint)
        source = SAEFeatureSource(
            subject, sae, name, context_length=settings.context_length, overflow=settings.overflow
        )
        source.check_features(chosen)
        result = source.activations([text])[0]
    rows = _feature_rows(result, chosen, top)
    if as_json:
        _print_json(
            {
                "model": subject.name,
                "hookpoint": name,
                "sae": str(runtime.sae_path(settings)),
                "d_sae": sae.d_sae,
                **({"features": chosen} if features is not None else {}),
                **({"top": top} if top is not None else {}),
                "tokens": rows,
            }
        )
        return
    _print_feature_view(
        rows,
        chosen,
        top,
        f"{subject.name} · {name} · SAE {runtime.sae_path(settings)} ({sae.d_sae:,} features)",
    )


def _parse_features(spec: str) -> list[int]:
    """ "12,40" -> [12, 40] (repeats dropped, order kept)."""
    chosen: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        if not (part.isascii() and part.isdigit()):
            raise ValueError(
                f"--features takes comma-separated feature indices, e.g. 12,40; {part!r} is not one"
            )
        if int(part) not in chosen:
            chosen.append(int(part))
    return chosen


def _feature_rows(result: Any, chosen: list[int], top: int | None) -> list[dict[str, Any]]:
    """Per token: text, span, the chosen features' activations, the `top` strongest."""
    rows = []
    for token, active in zip(result.tokens, result.by_token(), strict=True):
        row: dict[str, Any] = {"text": token.text, "start": token.start, "end": token.end}
        if chosen:
            row["activations"] = {str(f): active.get(f, 0.0) for f in chosen}
        if top is not None:
            strongest = sorted(active.items(), key=lambda fv: (-fv[1], fv[0]))[:top]
            row["top"] = [{"feature": f, "activation": v} for f, v in strongest]
        rows.append(row)
    return rows


def _heat_style(value: float, scale: float) -> str:
    """Background from pale yellow (weak) to deep red (the text's strongest); none at 0."""
    if value == 0 or scale <= 0:
        return ""
    t = min(abs(value) / scale, 1.0)
    r, g, b = (round(lo + (hi - lo) * t) for lo, hi in ((255, 190), (236, 20), (170, 30)))
    return f"{'black' if t < 0.55 else 'white'} on rgb({r},{g},{b})"


def _print_feature_view(
    rows: list[dict[str, Any]], chosen: list[int], top: int | None, title: str
) -> None:
    console.print(Text(title, style="bold"), end="\n\n")
    scales = {f: max((abs(r["activations"][str(f)]) for r in rows), default=0.0) for f in chosen}
    for f in chosen:
        console.print(Text(f"feature {f}  (max {scales[f]:.4g})", style="bold"))
        line = Text()
        for row in rows:
            value = row["activations"][str(f)]
            line.append(row["text"], style=_heat_style(value, scales[f]))
        console.print(line, end="\n\n")
    table = Table()
    table.add_column("#", justify="right", style="dim")
    table.add_column("token")
    table.add_column("chars", style="dim")
    for f in chosen:
        table.add_column(f"f{f}", justify="right")
    if top is not None:
        table.add_column(f"top {top} features")
    for i, row in enumerate(rows):
        cells: list[str | Text] = [str(i), _shown(row["text"]), f"{row['start']}-{row['end']}"]
        for f in chosen:
            value = row["activations"][str(f)]
            shown = f"{value:.3f}" if value else "·"
            cells.append(Text(shown, style=_heat_style(value, scales[f]) or "dim"))
        if top is not None:
            cells.append(
                Text("  ").join(
                    Text.assemble((str(e["feature"]), "green"), f"={e['activation']:.3f}")
                    for e in row["top"]
                )
            )
        table.add_row(*cells)
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
        text = _read_text(text)
        source = PlantedFeatures(
            load_planted_spec(spec or default_spec_path()), runtime.open_tokenizer(settings)
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
        _print_json({"tokens": rows})
        return
    table = Table(title="planted feature activations per token")
    table.add_column("#", justify="right", style="dim")
    table.add_column("token")
    table.add_column("chars", style="dim")
    table.add_column("active features")
    for i, (token, active) in enumerate(zip(result.tokens, result.by_token(), strict=True)):
        shown = ", ".join(f"[green]{names[f]}[/]={v:g}" for f, v in sorted(active.items()))
        table.add_row(str(i), _shown(token.text), f"{token.start}-{token.end}", shown)
    console.print(table)


# Sub-app registered last: its modules may import helpers from this one.
from api.cli_sae import sae_app  # noqa: E402
from api.cli_sae_eval import eval_command  # noqa: E402

sae_app.command("eval")(eval_command)
app.add_typer(sae_app, name="sae")


if __name__ == "__main__":
    app()
