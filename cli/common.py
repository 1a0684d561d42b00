"""Helpers every `glossator` command shares: consoles, user errors, text input, JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from cli.faults import UTF8_HINT, fault_message
from errors import UserError

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # paths in messages stay whole

MAX_TEXT_CHARS = 100_000
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document instead.")]


_verbose: list[bool] = [False]  # set by the app's callback (-v)


def set_verbose(verbose: bool) -> None:
    _verbose[0] = verbose


@contextmanager
def user_errors() -> Iterator[None]:
    """Errors the user can act on become a one-paragraph message and exit code 2; any
    other exception is a bug in glossator: a short internal-error message and exit code
    1 (with -v, the traceback instead)."""
    try:
        yield
    except (typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException):
        raise  # an exit a command chose, or click's own usage errors
    except Exception as err:
        # Errors glossator raises on purpose, a malformed value in a file or option,
        # input that is not UTF-8, a Redis or a data dir it cannot use (cli/faults.py).
        if (message := fault_message(err)) is not None:
            err_console.print(f"[bold red]error:[/] {escape(message)}")
            raise typer.Exit(2) from err
        if _verbose[0]:
            raise
        err_console.print(
            f"[bold red]internal error[/] (a bug in glossator; please report it): "
            f"{type(err).__name__}: {escape(str(err))}. Run again with -v for the traceback."
        )
        raise typer.Exit(1) from err


def read_text(text: str) -> str:
    """A text argument, or with '-' standard input; refused when empty, too long, or
    not UTF-8 (Python would hand undecodable bytes on as lone surrogates)."""
    if text == "-":
        text = _read_stdin()
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"the text is not valid UTF-8; {UTF8_HINT}") from None
    if not text.strip():
        raise UserError("the text is empty; give some text, or '-' to read it from stdin")
    if len(text) > MAX_TEXT_CHARS:
        raise UserError(
            f"the text has {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}: "
            "split it, or use a corpus for bulk work"
        )
    return text


def _read_stdin() -> str:
    """Standard input decoded as strict UTF-8, whatever the locale's error handler."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text-only stream (tests): already decoded
        return sys.stdin.read()
    data = stream.read()
    try:
        return str(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(
            f"standard input is not valid UTF-8 (byte {data[err.start]:#04x} at offset "
            f"{err.start}); {UTF8_HINT}"
        ) from None


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
