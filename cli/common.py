"""Helpers every `glossator` command shares: consoles, user errors, text input, JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from runtime.settings import SettingsError

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # paths in messages stay whole

MAX_TEXT_CHARS = 100_000
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document instead.")]


def _user_errors() -> tuple[type[Exception], ...]:
    from probes.corpus import CorpusFormatError
    from probes.hookpoints import UnknownHookpointError
    from probes.model import ModelLoadError
    from probes.planted import PlantedSpecError
    from runtime.redis_server import RedisUnavailableError

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


def read_text(text: str) -> str:
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


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")


def shown_token(token: str) -> str:
    return token.replace("\n", "\\n").replace("\t", "\\t")


def feature_index(feature: str, names: list[str] | None) -> int:
    """A feature given as its index, or (planted features, `names` given) as its id."""
    from identifiers.features import parse_feature

    return parse_feature(feature, names)


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
