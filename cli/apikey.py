"""`glossator apikey create|revoke|list`: the HTTP service's API keys (in the settings'
Redis). A token is printed once, at creation; glossator keeps only its hash."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from cli.common import JsonFlag, console, err_console, print_json, user_errors
from runtime.apikeys import ApiKeyError, ApiKeyStore, KeyInfo
from runtime.redis_server import connect
from runtime.settings import get_settings

apikey_app = typer.Typer(
    help="API keys for the HTTP service (writes and runs need one).", no_args_is_help=True
)


@contextmanager
def _store() -> Iterator[ApiKeyStore]:
    """The settings' key store, with every error the user can act on as exit code 2."""
    with user_errors():
        client = connect(get_settings())
        try:
            yield ApiKeyStore(client)
        except ApiKeyError as error:
            err_console.print(f"[bold red]error:[/] {error}")
            raise typer.Exit(2) from error
        finally:
            client.close()


@apikey_app.command()
def create(
    name: Annotated[str, typer.Argument(help="A name to tell the key by, e.g. ci or alice.")],
    admin: Annotated[
        bool,
        typer.Option(
            "--admin",
            help="The key may cancel, resume and write into every key's jobs, chat threads, "
            "runs and benchmarks, not only its own.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a key and print its token (only now: it cannot be shown again)."""
    with _store() as store:
        info, token = store.create(name, admin=admin)
    if as_json:
        print_json({"id": info.id, "name": info.name, "admin": info.admin, "token": token})
        return
    # The token alone on stdout (TOKEN=$(glossator apikey create ci) works); the rest on stderr.
    kind = "admin API key" if info.admin else "API key"
    err_console.print(f"created {kind} [bold]{info.id}[/] ({info.name})")
    print(token)
    err_console.print(
        "[yellow]warning:[/] store this token now: it cannot be shown again "
        "(glossator keeps only its hash)"
    )


@apikey_app.command()
def revoke(
    key: Annotated[str, typer.Argument(metavar="KEY_ID_OR_NAME", help="A key id or name.")],
    as_json: JsonFlag = False,
) -> None:
    """Revoke a key: requests with its token are refused from now on."""
    with _store() as store:
        info = store.revoke(key)
    if as_json:
        print_json(info.model_dump(mode="json"))
        return
    console.print(f"revoked API key [bold]{info.id}[/] ({info.name}) at {_when(info.revoked_at)}")


@apikey_app.command("list")
def list_keys(as_json: JsonFlag = False) -> None:
    """Every key, revoked ones too, oldest first (never their tokens)."""
    with _store() as store:
        keys = store.list()
    if as_json:
        print_json([info.model_dump(mode="json") for info in keys])
        return
    if not keys:
        console.print("no API keys; create one with `glossator apikey create NAME`")
        return
    table = Table("id", "name", "admin", "created", "last used", "status")
    for info in keys:
        table.add_row(
            info.id,
            info.name,
            "admin" if info.admin else "",
            _when(info.created_at),
            _when(info.last_used_at),
            _status(info),
        )
    console.print(table)


def _when(moment: datetime | None) -> str:
    return "never" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _status(info: KeyInfo) -> str:
    return "active" if info.active else f"revoked {_when(info.revoked_at)}"
