"""`glossator sae eval`: an SAE's quality on held-out text (SAEBench core metrics).

Registered on the `sae` sub-app by `cli.app`. One pass over the texts gives both the
reconstruction metrics (L0, explained variance, MSE, cosine, fraction alive, from the
hookpoint's clean activations) and the CE losses (clean / spliced / zero-ablated).
A transcoder is scored at its output hookpoint: its prediction from its input hookpoint
against, and spliced in place of, the model's own output there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

# About 1-2 minutes on 2 CPU cores with the default model (3 full forwards per token,
# measured 20-60 tokens/s); raise it on a GPU, and for fraction alive on wide SAEs.
DEFAULT_EVAL_TOKENS = 4096
DEFAULT_EVAL_BATCH = 8  # rows per forward; the full LM head's logits are [rows, T, vocab]

_ROWS = (
    ("n_tokens", "tokens evaluated", "{:,}"),
    ("l0", "L0 (active features per token)", "{:.2f}"),
    ("explained_variance", "explained variance", "{:.4f}"),
    ("mse", "MSE (per element)", "{:.4g}"),
    ("cosine", "cosine similarity", "{:.4f}"),
    ("fraction_alive", "fraction alive", "{:.4f}"),
    ("ce_clean", "CE clean (nats)", "{:.4f}"),
    ("ce_spliced", "CE with SAE spliced in", "{:.4f}"),
    ("ce_zero", "CE zero-ablated", "{:.4f}"),
    ("ce_loss_recovered", "CE loss recovered", "{:.4f}"),
)


def take_tokens(tokenizer: Any, texts: Iterable[str], n_tokens: int) -> list[str]:
    """Texts in order until they hold `n_tokens` tokens; the last one is cut at a token end."""
    taken: list[str] = []
    total = 0
    for text in texts:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
        if not offsets:
            continue
        room = n_tokens - total
        if len(offsets) > room:
            text = text[: offsets[room - 1][1]]
        taken.append(text)
        total += min(len(offsets), room)
        if total >= n_tokens:
            break
    return taken


def _json_number(value: float | int) -> float | int | None:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def eval_command(
    sae: Annotated[
        Path | None,
        typer.Option(
            "--sae",
            exists=True,
            help="SAE folder; default: GLOSSATOR_SAE, else the default SAE.",
        ),
    ] = None,
    tokens: Annotated[
        int, typer.Option("--tokens", min=1, help="Held-out tokens to evaluate on.")
    ] = DEFAULT_EVAL_TOKENS,
    corpus: Annotated[
        Path | None,
        typer.Option(
            "--corpus",
            exists=True,
            help="Evaluate on this corpus (txt/JSONL/Parquet/folder) instead of the "
            "default corpus' held-out split.",
        ),
    ] = None,
    hookpoint: Annotated[
        str | None, typer.Option(help="Override the SAE's own (input) hookpoint, e.g. layers.6.")
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Rows per forward pass.")
    ] = DEFAULT_EVAL_BATCH,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead.")] = (
        False
    ),
) -> None:
    """SAE quality on held-out text: L0, explained variance, MSE, cosine, CE-loss recovered.

    Also fraction alive. CE-loss recovered splices the SAE's reconstruction into the
    model at its hookpoint: (CE zero-ablated - CE spliced) / (CE zero-ablated - CE clean).
    """
    from cli.common import console, print_json, user_errors
    from probes.corpus import iter_corpus
    from probes.default_corpus import load_default_corpus
    from probes.splice import splice_losses
    from runtime import loaders
    from runtime.settings import get_settings
    from sae.metrics import ReconstructionStats

    with user_errors():
        settings = get_settings(**({"sae": str(sae)} if sae else {}))
        subject = loaders.open_subject_model(settings)
        model = loaders.open_sae(settings, subject)
        name = loaders.sae_hookpoint(settings, model, hookpoint)
        output = model.cfg.output_hookpoint  # transcoders write where they do not read
        if corpus is not None:
            source = str(corpus)
            texts = take_tokens(subject.tokenizer, iter_corpus(corpus), tokens)
        else:
            source = f"{loaders.default_corpus_dir(settings)} (held-out split)"
            default = load_default_corpus(
                loaders.default_corpus_dir(settings), tokenizer=subject.tokenizer
            )
            texts = take_tokens(subject.tokenizer, default.heldout, tokens)
        stats = ReconstructionStats(model.d_out, model.d_sae, model.device)
        losses = splice_losses(
            subject,
            model,
            name,
            texts,
            output_hookpoint=output,
            context_length=settings.context_length,
            batch_size=batch_size,
            overflow=settings.overflow,
            stats=stats,
            progress=True,
        )
        metrics = stats.result()
    values: dict[str, Any] = {
        **metrics.summary(),
        "ce_clean": losses.ce_clean,
        "ce_spliced": losses.ce_spliced,
        "ce_zero": losses.ce_zero,
        "ce_loss_recovered": losses.ce_loss_recovered,
        "n_ce_targets": losses.n_targets,
    }
    about = {
        "model": subject.name,
        "sae": str(loaders.sae_path(settings)),
        "architecture": model.cfg.architecture,
        "hookpoint": name,
        "output_hookpoint": output or name,
        "d_in": model.d_in,
        "corpus": source,
        "n_texts": len(texts),
    }
    if as_json:
        print_json({**about, **{k: _json_number(v) for k, v in values.items()}})
        return
    where = name if output is None else f"{name} -> {output}"
    kind = f"{model.cfg.architecture} SAE, {model.d_sae:,} features"
    console.print(f"[bold]{subject.name} · {where} · {kind}[/]")
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label, fmt in _ROWS:
        value = values[key]
        table.add_row(label, "n/a" if not math.isfinite(value) else fmt.format(value))
    table.add_row("features alive", f"{values['n_alive']:,} of {model.d_sae:,}")
    console.print(table)
    console.print(f"[dim]SAE {about['sae']} · corpus {source} · {len(texts)} texts[/]")
