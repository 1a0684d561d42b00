"""`glossator evidence build` (the dictionary-wide evidence pass) and `glossator feature N`
(one feature's evidence from it)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cli.common import JsonFlag, console, err_console, feature_index, print_json, user_errors
from errors import UserError
from runtime.settings import Settings, get_settings

if TYPE_CHECKING:
    from probes.evidence.config import EvidenceConfig, EvidenceManifest
    from probes.evidence.store import EvidenceStore
    from probes.planted import PlantedFeatureSpec
    from runtime.evidence import EvidenceJob

evidence_app = typer.Typer(
    help="Build dictionary-wide feature evidence: top contexts, quantile samples, statistics.",
    no_args_is_help=True,
)

PlantedFlag = Annotated[
    bool, typer.Option("--planted", help="Planted (ground-truth) features, not the model's SAE.")
]
SpecOption = Annotated[
    Path | None,
    typer.Option(
        exists=True, dir_okay=False, help="Planted feature spec (JSONL); implies --planted."
    ),
]
_ESTIMATE_CHARS = 200_000  # characters tokenized to estimate the corpus' token count


@evidence_app.command("build")
def build_command(
    planted: PlantedFlag = False,
    spec: SpecOption = None,
    corpus: Annotated[
        Path | None,
        typer.Option(exists=True, help="Corpus (txt/JSONL/Parquet/folder); default: the default."),
    ] = None,
    hookpoint: Annotated[
        str | None, typer.Option(help="Where to read the SAE, e.g. layers.6 (default: its own).")
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(min=1, help="Read about this many tokens (whole chunks of 256 texts)."),
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Top contexts kept per feature.")] = 50,
    context_width: Annotated[int, typer.Option(min=1, max=4096, help="Tokens per context.")] = 64,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Rows per forward pass (default: by device).")
    ] = None,
    batch_tokens: Annotated[
        int | None, typer.Option(min=1, help="Padded tokens per forward pass (default: by device).")
    ] = None,
    checkpoint_every: Annotated[
        float,
        typer.Option(min=0, help="Seconds between checkpoints; an interrupted build resumes."),
    ] = 60.0,
    no_redis: Annotated[
        bool, typer.Option("--no-redis", help="Do not publish the feature summaries to Redis.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Read a corpus once and keep every feature's evidence (reused when already built)."""
    from probes.evidence.config import EvidenceConfig
    from probes.evidence.store import EvidenceStore
    from runtime import evidence

    with user_errors():
        use_planted = planted or spec is not None
        if use_planted and (hookpoint or batch_size or batch_tokens):
            raise UserError(
                "--hookpoint, --batch-size and --batch-tokens apply to model + SAE evidence, "
                "not to planted features; drop them or --planted/--spec"
            )
        settings = get_settings()
        config = EvidenceConfig(top_k=top_k, context_width=context_width, max_tokens=max_tokens)
        if use_planted:
            job = evidence.planted_job(settings, corpus, spec)
        else:
            job = evidence.sae_job(settings, corpus, hookpoint, batch_size, batch_tokens)
        manifest, folder, reused = _run_with_progress(settings, job, config, checkpoint_every)
        store = EvidenceStore(folder, job.tokenizer)
        published = None
        if not no_redis:
            published = _publish(settings, store, evidence.source_slug(job.source))
    summary = _build_summary(manifest, folder, store, reused, published)
    summary["read_from"] = job.read_from
    if as_json:
        print_json(summary)
        return
    if reused:
        console.print(f"reused cached evidence [bold]{manifest.evidence_id}[/]")
    else:
        console.print(f"built evidence [bold]{manifest.evidence_id}[/]")
    splits = summary["contexts_per_split"]
    shown = {
        **summary,
        "contexts_per_split": " · ".join(f"{k} {v:,}" for k, v in splits.items()),
        "published": "skipped (--no-redis)" if published is None else f"{published} summaries",
    }
    for key, value in shown.items():
        if key != "reused":
            console.print(
                f"[bold]{key}[/]: {value:,}"
                if isinstance(value, int)
                else f"[bold]{key}[/]: {value}"
            )


def _estimate_tokens(job: EvidenceJob, max_tokens: int | None) -> int | None:
    """The pass' token count: the token cache's count when the job has one, else from the
    tokens per character of the first texts (the corpus is shuffled, so they are a fair
    sample); at most max_tokens."""
    if job.n_tokens is not None:
        return min(job.n_tokens, max_tokens) if max_tokens is not None else job.n_tokens
    sample: list[str] = []
    chars = 0
    for text in job.texts:
        if chars >= _ESTIMATE_CHARS:
            break
        sample.append(text)
        chars += len(text)
    if not chars:
        return max_tokens
    ids = job.tokenizer(sample, add_special_tokens=False)["input_ids"]
    per_char = sum(len(row) for row in ids) / chars
    estimate = max(1, round(per_char * sum(len(t) for t in job.texts)))
    return min(estimate, max_tokens) if max_tokens is not None else estimate


def _run_with_progress(
    settings: Settings, job: EvidenceJob, config: EvidenceConfig, checkpoint_every: float
) -> tuple[EvidenceManifest, Path, bool]:
    """Run the job with a progress bar on stderr; True when finished evidence was reused."""
    from runtime.evidence import run_job

    total = _estimate_tokens(job, config.max_tokens)
    started = time.monotonic()
    progress = Progress(
        TextColumn("[bold]evidence"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:,.0f} tokens · {task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,  # the summary follows; a reused build shows no bar at all
    )
    task = progress.add_task("evidence", total=total, rate="- tok/s")
    first_read: int | None = None  # tokens already read by an interrupted run

    def on_chunk(tokens_read: int, tokens_this_chunk: int) -> None:
        nonlocal first_read
        if first_read is None:
            first_read = tokens_read - tokens_this_chunk
        rate = (tokens_read - first_read) / max(time.monotonic() - started, 1e-9)
        if total is not None and tokens_read > total:
            progress.update(task, total=tokens_read)
        progress.update(task, completed=tokens_read, rate=f"{rate:,.0f} tok/s")

    with progress:
        manifest, folder, reused = run_job(settings, job, config, on_chunk, checkpoint_every)
        progress.update(task, total=manifest.n_tokens, completed=manifest.n_tokens)
    return manifest, folder, reused


def _publish(settings: Settings, store: EvidenceStore, slug: str) -> int:
    from probes.evidence.summary import publish
    from runtime.redis_server import connect

    client = connect(settings)
    try:
        with err_console.status("publishing the feature summaries to Redis"):
            return publish(client, store, slug)
    finally:
        client.close()


def _build_summary(
    manifest: EvidenceManifest,
    folder: Path,
    store: EvidenceStore,
    reused: bool,
    published: int | None,
) -> dict[str, Any]:
    from probes.evidence.config import SPLITS

    alive = int((store.tensor("stats.count") > 0).sum())
    return {
        "evidence_id": manifest.evidence_id,
        "folder": str(folder),
        "reused": reused,
        "source": manifest.source.get("kind"),
        "features": manifest.n_features,
        "features_alive": alive,
        "texts": manifest.n_texts,
        "contexts": manifest.n_contexts,
        "contexts_per_split": dict(zip(SPLITS, manifest.n_contexts_per_split, strict=True)),
        "tokens": manifest.n_tokens,
        "seconds": manifest.seconds,
        "published": published,  # summaries written to Redis; None with --no-redis
    }


def feature_command(
    feature: Annotated[
        str, typer.Argument(help="Feature index; planted features also by id, e.g. word-love.")
    ],
    planted: PlantedFlag = False,
    spec: SpecOption = None,
    evidence_id: Annotated[
        str | None,
        typer.Option("--evidence", help="Evidence id (default: the latest build of the source)."),
    ] = None,
    top: Annotated[int, typer.Option(min=0, help="Top contexts shown.")] = 10,
    per_quantile: Annotated[
        int, typer.Option(min=0, help="Examples shown per activation quantile.")
    ] = 1,
    as_json: JsonFlag = False,
) -> None:
    """One feature's evidence: statistics, histogram, top contexts, quantile samples,
    non-activating examples, logit lens and similar features."""
    from cli.feature_view import print_feature
    from probes.evidence.config import EvidenceError, read_manifest
    from runtime.evidence import evidence_folder, open_store

    with user_errors():
        settings = get_settings()
        folder = evidence_folder(settings, evidence_id, spec, planted or bool(spec))
        manifest = read_manifest(folder)
        if manifest is None:
            raise EvidenceError(f"no finished evidence in {folder}; run `glossator evidence build`")
        specs = _planted_specs(manifest.source)
        index = feature_index(feature, [spec.id for spec in specs] if specs else None)
        store = open_store(settings, folder)
        found = store.feature(index, top=top, per_quantile=per_quantile)
    named = specs[index] if specs is not None else None
    if as_json:
        extra = {"name": named.id, "description": named.description} if named else {}
        print_json({**found.model_dump(), **extra})
        return
    print_feature(found, named, manifest)


def _planted_specs(source: dict[str, str]) -> list[PlantedFeatureSpec] | None:
    """The planted specs of planted evidence (order = feature index), when its spec file
    is still the one it was built from; None otherwise."""
    from probes.planted import load_planted_spec
    from runtime.evidence import PLANTED, fingerprint

    path = Path(source.get("spec_path", ""))
    if source.get("kind") != PLANTED or not path.is_file():
        return None
    if fingerprint(path) != source.get("spec_hash"):
        return None
    return load_planted_spec(path)
