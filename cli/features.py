"""`glossator activations --features/--top`: SAE feature activations per token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from cli.common import console, print_json, read_text, shown_token, user_errors
from errors import UserError
from identifiers.features import parse_feature
from runtime import loaders
from runtime.settings import get_settings

DEFAULT_TOP = 5  # features per token shown by `activations --sae` without --features/--top


def sae_activations(
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
        text = read_text(text)
        chosen = _parse_features(features) if features is not None else []
        if features is None and top is None:
            top = DEFAULT_TOP
        subject = loaders.open_subject_model(settings)
        sae = loaders.open_sae(settings, subject)
        name = loaders.sae_hookpoint(settings, sae, hookpoint)
        source = SAEFeatureSource(
            subject, sae, name, context_length=settings.context_length, overflow=settings.overflow
        )
        source.check_features(chosen)
        result = source.activations([text])[0]
    rows = _feature_rows(result, chosen, top)
    if as_json:
        print_json(
            {
                "model": subject.name,
                "hookpoint": name,
                "sae": str(loaders.sae_path(settings)),
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
        f"{subject.name} · {name} · SAE {loaders.sae_path(settings)} ({sae.d_sae:,} features)",
    )


def _parse_features(spec: str) -> list[int]:
    """ "12,40" -> [12, 40] (repeats dropped, order kept)."""
    chosen: list[int] = []
    for part in spec.split(","):
        try:
            index = parse_feature(part)
        except ValueError:
            given = part.strip()
            raise UserError(
                "--features takes comma-separated feature indices, e.g. 12,40; "
                f"{given!r} is not one"
            ) from None
        if index not in chosen:
            chosen.append(index)
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
        cells: list[str | Text] = [str(i), shown_token(row["text"]), f"{row['start']}-{row['end']}"]
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
