"""`glossator steer N "text"`: what a feature does to the model's next-token predictions,
by adding its decoder direction in (probes/steering.py)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from cli.common import JsonFlag, console, print_json, read_text, shown_token, user_errors
from runtime import loaders
from runtime.settings import Settings, get_settings

if TYPE_CHECKING:
    from probes.steering import Steering, SteeringResult, TokenShift


def steer_command(
    feature: Annotated[int, typer.Argument(help="Feature index of the SAE.")],
    text: Annotated[str, typer.Argument(help="The text, or '-' to read stdin.")],
    strength: Annotated[
        float | None,
        typer.Option(help="Add this many units of the feature at every token (<0: take away)."),
    ] = None,
    clamp: Annotated[
        float | None, typer.Option(help="Set the feature's activation to this at every token.")
    ] = None,
    times: Annotated[
        float | None,
        typer.Option(help="Clamp to this multiple of its largest activation in its evidence."),
    ] = None,
    tokens: Annotated[
        int, typer.Option(min=0, max=256, help="Greedy tokens to continue, clean and steered.")
    ] = 16,
    top: Annotated[
        int, typer.Option(min=0, max=100, help="Promoted and demoted tokens shown.")
    ] = 10,
    sae: Annotated[
        Path | None,
        typer.Option(exists=True, help="SAE folder; default: GLOSSATOR_SAE, else the default SAE."),
    ] = None,
    hookpoint: Annotated[
        str | None, typer.Option(help="Where the SAE reads (default: its own).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the text clean and with the feature steered (--strength, --clamp or --times):
    how far the next-token distribution moves (KL), the tokens it promotes and demotes,
    and both greedy continuations."""
    from probes.steering import steer_texts
    from probes.steering_shift import check_feature, steering_of

    with user_errors():
        settings = get_settings(**({"sae": str(sae)} if sae else {}))
        text = read_text(text)
        subject = loaders.open_subject_model(settings)
        dictionary = loaders.open_sae(settings, subject)
        name = loaders.sae_hookpoint(settings, dictionary, hookpoint)
        check_feature(dictionary, feature)
        max_act = _max_act(settings, feature) if times is not None else None
        steering = steering_of(
            feature, strength=strength, clamp=clamp, times=times, max_act=max_act
        )
        (result,) = steer_texts(
            subject, dictionary, name, [text], steering,
            continuation_tokens=tokens, top_tokens=top, context_length=settings.context_length,
        )  # fmt: skip
    if as_json:
        print_json(
            {
                "model": subject.name,
                "sae": str(loaders.sae_path(settings)),
                "hookpoint": name,
                "feature": feature,
                "strength": steering.strength,
                "clamp": steering.clamp,
                **asdict(result),
            }
        )
        return
    _print(result, steering, name, times)


def _max_act(settings: Settings, feature: int) -> float:
    """The feature's largest activation in the latest evidence of the configured SAE."""
    from errors import UserError
    from probes.steering_shift import SteeringError
    from runtime.evidence import evidence_folder, open_store

    try:
        store = open_store(settings, evidence_folder(settings, None, None, False))
    except UserError as error:
        raise SteeringError(
            f"--times needs the SAE's evidence: {error}; or give --strength or --clamp"
        ) from error
    return store.stats(feature).max_act


def _print(result: SteeringResult, steering: Steering, hookpoint: str, times: float | None) -> None:
    how = (
        f"strength {steering.strength:+g}"
        if steering.strength is not None
        else f"clamped to {steering.clamp:.4g}" + (f" ({times:g} x its max)" if times else "")
    )
    console.print(Text(f"feature {steering.feature} · {how} at {hookpoint}", style="bold"))
    console.print(
        f"KL(steered || clean) of the next token: {result.kl_last:.3f} nats after the text, "
        f"{result.kl_mean:.3f} on average over its tokens"
    )
    table = Table(title="next token after the text")
    for column in ("promoted", "Δ log p", "p steered", "demoted", "Δ log p ", "p clean"):
        table.add_column(column, justify="left" if column.endswith("ted") else "right")
    for i in range(max(len(result.promoted), len(result.demoted))):
        table.add_row(*_cells(result.promoted, i, steered=True), *_cells(result.demoted, i))
    console.print(table)
    for label, continuation, style in (
        ("clean:   ", result.clean_continuation, "cyan"),
        ("steered: ", result.steered_continuation, "magenta"),
    ):
        console.print(Text.assemble((label, "bold"), result.text, (continuation, style)))


def _cells(shifts: list[TokenShift], i: int, steered: bool = False) -> tuple[str, str, str]:
    """A token, its change and its probability (steered for promoted, clean for demoted)."""
    if i >= len(shifts):
        return ("", "", "")
    shift = shifts[i]
    prob = shift.steered_prob if steered else shift.clean_prob
    return (shown_token(shift.token), f"{shift.delta_logprob:+.2f}", f"{prob:.3g}")
