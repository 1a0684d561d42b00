"""How the CLI reports failures: errors glossator raises on purpose are messages with
exit code 2, anything else is an internal error (exit code 1, no traceback), and a
command's own exit passes through."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from cli.common import user_errors
from errors import ServiceError, UserError


def _app(error: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def fail() -> None:
        with user_errors():
            raise error

    return app


def _run(error: BaseException) -> tuple[int, str]:
    result = CliRunner().invoke(_app(error), [])
    return result.exit_code, result.output


def test_user_and_service_errors_are_messages() -> None:
    code, output = _run(UserError("give a number, not [x]"))
    assert code == 2 and "error:" in output and "give a number, not [x]" in output
    code, output = _run(ServiceError("Redis at unix:///tmp/r.sock is down"))
    assert code == 2 and "Redis at unix:///tmp/r.sock is down" in output


def test_anything_else_is_an_internal_error_without_a_traceback() -> None:
    code, output = _run(KeyError("shape"))
    assert code == 1
    assert "internal error" in output and "KeyError" in output and "-v" in output
    assert "Traceback" not in output
    code, _ = _run(ValueError("a plain ValueError is a bug, not a user error"))
    assert code == 1


def test_a_commands_own_exit_passes_through() -> None:
    assert _run(typer.Exit(3))[0] == 3
