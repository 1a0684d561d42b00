"""`glossator sae ...`: train and evaluate sparse dictionaries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from cli.common import JsonFlag, console, print_json, user_errors
from errors import UserError

sae_app = typer.Typer(help="Train and evaluate sparse dictionaries.", no_args_is_help=True)

ARCH_HELP = "topk, batchtopk or matryoshka (BatchTopK with nested prefix losses)."


def _split_corpus(path: Path) -> tuple[list[str], list[str]]:
    """A user corpus split like the default one: ~5% of texts (by hash) held out."""
    from probes.corpus import read_corpus
    from probes.default_corpus import is_heldout

    texts = read_corpus(path)
    train = [t for t in texts if not is_heldout(t)]
    heldout = [t for t in texts if is_heldout(t)]
    if not train:
        train, heldout = texts, []
    return train, heldout


def _default_out(data_dir: Path, model: str, hookpoint: str, arch: str, width: int) -> Path:
    return data_dir / "saes" / f"{model}.{hookpoint}.{arch}-{width}"


@sae_app.command("train")
def train_command(
    hookpoint: Annotated[
        str | None,
        typer.Option(help="Where to read activations, e.g. layers.6 (default: settings)."),
    ] = None,
    architecture: Annotated[str, typer.Option(help=ARCH_HELP)] = "topk",
    width: Annotated[int, typer.Option(min=1, help="Number of features (d_sae).")] = 4096,
    k: Annotated[int, typer.Option(min=1, help="Active features per token.")] = 32,
    tokens: Annotated[
        int, typer.Option(min=1, help="Training tokens (steps x batch).")
    ] = 2_000_000,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output folder (default: <data dir>/saes/<model>.<hookpoint>.<arch>-<width>)."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the unfinished run in --out.")
    ] = False,
    corpus: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            help="Train on this corpus (txt/JSONL/Parquet/folder; ~5% of its texts held out) "
            "instead of the default corpus' train split.",
        ),
    ] = None,
    cache_tokens: Annotated[
        int,
        typer.Option(
            min=0,
            help="Read this many tokens' activations once and train in passes over them; "
            "0 streams every training token from the model.",
        ),
    ] = 200_000,
    from_cache: Annotated[
        bool,
        typer.Option(
            "--from-cache",
            help="Read the whole corpus once into its activation cache (or reuse it) and "
            "train on all of its training texts; evidence passes then reuse the cache too.",
        ),
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Tokens per optimiser step.")] = 4096,
    lr: Annotated[
        float | None, typer.Option(help="Learning rate (default: 2e-4 / sqrt(width / 2^14)).")
    ] = None,
    matryoshka_widths: Annotated[
        str | None, typer.Option(help="Nested prefix sizes for matryoshka, e.g. 256,1024,4096.")
    ] = None,
    auxk_fraction: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=1.0,
            help="Share of each batch's rows AuxK runs on (the default SAE: 0.25).",
        ),
    ] = 1.0,
    encoder_dtype: Annotated[
        str,
        typer.Option(
            help="auto, float32 or bfloat16: the encoder's ranking product (auto: bfloat16 "
            "where it is fast: CUDA, CPUs with AVX512-BF16 or AMX)."
        ),
    ] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the initialisation and data order.")] = 0,
    checkpoint_every: Annotated[
        int, typer.Option(min=0, help="Steps between checkpoints (0: none).")
    ] = 100,
    heldout_tokens: Annotated[
        int, typer.Option(min=0, help="Held-out tokens for the final metrics (0: skip).")
    ] = 20_000,
    as_json: JsonFlag = False,
) -> None:
    """Train a TopK-family SAE on a hookpoint's activations over a corpus."""
    from probes.default_corpus import load_default_corpus
    from runtime import loaders
    from runtime.default_sae import cached_training_data, train_on_texts
    from runtime.settings import get_settings
    from sae.training import ARCHITECTURES, TrainConfig, check_out_dir
    from sae.training.config import ENCODER_DTYPES

    with user_errors():
        if architecture not in ARCHITECTURES:
            raise UserError(
                f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
            )
        if encoder_dtype not in ENCODER_DTYPES:
            raise UserError(
                f"unknown --encoder-dtype {encoder_dtype!r}; choose "
                f"{', '.join(ENCODER_DTYPES[:-1])} or {ENCODER_DTYPES[-1]}"
            )
        settings = get_settings()
        if out is not None:  # fail before loading anything
            check_out_dir(out, resume)
        name = hookpoint or settings.hookpoint
        subject = loaders.open_subject_model(settings)
        cfg = TrainConfig(
            architecture=architecture,  # type: ignore[arg-type]
            d_in=subject.d_model,
            d_sae=width,
            k=k,
            matryoshka_widths=_parse_widths(matryoshka_widths),
            total_tokens=tokens,
            batch_tokens=batch_size,
            lr=lr,
            auxk_fraction=auxk_fraction,
            encoder_dtype=encoder_dtype,  # type: ignore[arg-type]
            seed=seed,
            hookpoint=name,
            model_name=subject.name,
        )
        if corpus is not None:
            train, heldout = _split_corpus(corpus)
            source_name = str(corpus)
        else:
            default = load_default_corpus(
                loaders.default_corpus_dir(settings), tokenizer=subject.tokenizer
            )
            train, heldout = default.train, default.heldout
            source_name = f"{loaders.default_corpus_dir(settings)} (train split)"
        folder = out or _default_out(settings.data_dir, subject.name, name, architecture, width)
        cached = (
            cached_training_data(settings, subject, name, corpus, heldout) if from_cache else None
        )
        result = train_on_texts(
            settings,
            subject,
            train,
            heldout,
            cfg,
            folder,
            resume=resume,
            cache_tokens=min(cache_tokens, tokens),
            heldout_tokens=heldout_tokens,
            checkpoint_every=checkpoint_every,
            progress=True,
            source_name=source_name,
            cached=cached,
        )
    summary = _summary(folder, result.stats, cfg)
    if as_json:
        print_json(summary)
        return
    console.print(f"[bold green]saved[/] {folder}")
    for key in ("architecture", "hookpoint", "width", "k"):
        console.print(f"[bold]{key}[/]: {summary[key]}")
    t = summary["training"]
    console.print(
        f"[bold]training[/]: {t['tokens']:,} tokens in {t['seconds']:.0f} s, "
        f"EV {t['explained_variance']:.3f}, L0 {t['l0']:.1f}, dead {t['dead_fraction']:.1%}"
    )
    h = summary["heldout"]
    if h:
        console.print(
            f"[bold]held-out[/]: {h['n_tokens']:,} tokens, EV {h['explained_variance']:.3f}, "
            f"L0 {h['l0']:.1f}, alive {h['fraction_alive']:.1%}"
        )


def _parse_widths(spec: str | None) -> list[int] | None:
    if spec is None:
        return None
    try:
        return [int(part) for part in spec.split(",") if part.strip()]
    except ValueError as err:
        raise UserError(
            f"--matryoshka-widths takes comma-separated sizes, e.g. 256,1024,4096; got {spec!r}"
        ) from err


def _summary(folder: Path, stats: dict[str, Any], cfg: Any) -> dict[str, Any]:
    training = {k: v for k, v in stats["training"].items() if k != "config"}
    return {
        "out": str(folder),
        "model": cfg.model_name,
        "hookpoint": cfg.hookpoint,
        "architecture": cfg.architecture,
        "d_in": cfg.d_in,
        "width": cfg.d_sae,
        "k": cfg.k,
        "training": training,
        "heldout": stats.get("heldout", {}),
        "source": stats.get("source", {}),
    }


@sae_app.command("inspect")
def inspect_command(
    path: Annotated[Path, typer.Argument(help="An SAE folder or file, or a folder of SAEs.")],
    as_json: JsonFlag = False,
) -> None:
    """Say what PATH holds (format, architecture, hookpoint, sizes, normalisation) and
    whether glossator can use it, and why not."""
    from sae.formats.inspect import inspect_path

    with user_errors():
        if not path.exists():
            raise UserError(f"{path} does not exist; give an SAE folder or file")
        report = inspect_path(path)
    if as_json:
        print_json(report)
        return
    saes = report.get("saes")
    if saes is not None:
        console.print(
            f"[bold]{escape(str(path))}[/] holds {len(saes)} SAEs, one per hookpoint:",
            soft_wrap=True,
        )
    for entry in saes if saes is not None else [report]:
        _print_inspection(entry)


_SHOWN = (
    ("format", "format"),
    ("architecture", "architecture"),
    ("glossator_architecture", "read as"),
    ("hookpoint", "hookpoint"),
    ("hook_name", "TransformerLens hook"),
    ("recorded_hook_name", "recorded hook name"),
    ("output_hookpoint", "output hookpoint (transcoder)"),
    ("output_hook_name", "output TransformerLens hook"),
    ("d_in", "d_in"),
    ("d_out", "d_out"),
    ("width", "width"),
    ("k", "k"),
    ("matryoshka_widths", "matryoshka widths"),
    ("threshold", "threshold"),
    ("normalization", "normalisation"),
    ("folded_on_load", "folded on load"),
    ("model_name", "model"),
)


def _print_inspection(entry: dict[str, Any]) -> None:
    console.print(f"\n[bold]{escape(entry['path'])}[/]", soft_wrap=True)
    for key, label in _SHOWN:
        if entry.get(key) is not None:
            console.print(f"  {label}: {escape(str(entry[key]))}", soft_wrap=True)
    verdict = "[green]yes[/]" if entry["usable"] else "[red]no[/]"
    console.print(f"  usable by glossator: {verdict}")
    if entry.get("reason"):
        why = "note" if entry["usable"] else "why not"
        console.print(f"  {why}: {escape(entry['reason'])}", soft_wrap=True)
