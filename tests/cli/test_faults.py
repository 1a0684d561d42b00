"""Faults a user can cause or meet are one clear line on stderr and exit code 2, never a
traceback nor an "internal error": bytes that are not UTF-8 on stdin, in argv or in a
file given, a Redis that cannot be reached, a data dir that cannot be used. The real
`glossator` script runs as a subprocess; none of these cases loads a model."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
import redis
import typer
from typer.testing import CliRunner

from cli.common import user_errors
from tests.cli_helpers import GLOSSATOR

NOT_UTF8 = b"caf\xe9 \xff\xfe"  # Latin-1 text and stray bytes
slow = pytest.mark.slow  # drives `glossator` processes


def glossator(
    *args: str | bytes, env: dict[str, str], stdin: bytes = b""
) -> subprocess.CompletedProcess[str]:
    """`glossator ARGS` (bytes allowed, as a shell passes them) with `env` over this
    process's environment, minus any Redis URL of the caller's own."""
    base = {k: v for k, v in os.environ.items() if k != "GLOSSATOR_REDIS_URL"}
    done = subprocess.run(
        [GLOSSATOR, *args], env={**base, **env}, input=stdin, capture_output=True, timeout=300
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    stderr = result.stderr.strip()
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert len(stderr.splitlines()) == 1 and stderr.startswith("error:"), stderr
    for text in expected:
        assert text in stderr, stderr


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A fresh data dir; the model is never reached by these commands."""
    return {"GLOSSATOR_DATA_DIR": str(tmp_path / "data"), "GLOSSATOR_DEVICE": "cpu"}


def closed_port_url() -> str:
    """A Redis URL on a loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


@slow
@pytest.mark.parametrize("command", [["activations", "-"], ["planted", "-"]])
def test_stdin_that_is_not_utf8(env: dict[str, str], command: list[str]) -> None:
    result = glossator(*command, env=env, stdin=NOT_UTF8)
    assert_one_line_error(result, "standard input is not valid UTF-8", "0xe9")


@slow
@pytest.mark.parametrize(
    "args",
    [
        [b"activations", NOT_UTF8],
        [b"planted", NOT_UTF8],
        [b"explain", b"\xff"],
        [b"planted", b"--spec", b"/tmp/sp\xe9c.jsonl", b"hi"],
        [b"apikey", b"create", b"\xff"],
    ],
)
def test_arguments_that_are_not_utf8(env: dict[str, str], args: list[bytes]) -> None:
    assert_one_line_error(glossator(*args, env=env), "is not valid UTF-8", "\\x")


@slow
def test_a_file_that_is_not_utf8(env: dict[str, str], tmp_path: Path) -> None:
    spec = tmp_path / "spec.jsonl"
    spec.write_bytes(b'{"id": "caf' + NOT_UTF8 + b'"}\n')
    result = glossator("planted", "--spec", str(spec), "hi", env=env)
    assert_one_line_error(result, "not valid UTF-8")


def test_redis_unreachable(planted_env: dict[str, str]) -> None:
    down = {**planted_env, "GLOSSATOR_REDIS_URL": closed_port_url()}
    for command in (["explain", "5", "--planted"], ["explanation", "5", "--planted"]):
        assert_one_line_error(glossator(*command, env=down), "Redis", "127.0.0.1")
    assert_one_line_error(glossator("apikey", "list", env=down), "Cannot reach Redis")


@slow
def test_a_data_dir_that_cannot_be_used(env: dict[str, str], tmp_path: Path) -> None:
    # chmod does not stop root, whom tests may run as: a file where the folder should be
    # stops everyone.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for data_dir in (blocker, blocker / "data"):
        result = glossator("apikey", "list", env={**env, "GLOSSATOR_DATA_DIR": str(data_dir)})
        assert_one_line_error(result, "Not a directory", "GLOSSATOR_DATA_DIR")
    if os.geteuid() != 0:  # a read-only folder, where the permission bits count
        read_only = tmp_path / "read-only"
        read_only.mkdir(mode=0o500)
        result = glossator("apikey", "list", env={**env, "GLOSSATOR_DATA_DIR": str(read_only)})
        assert_one_line_error(result, "Permission denied", "GLOSSATOR_DATA_DIR")


def _fails_with(error: BaseException) -> tuple[int, str]:
    """Exit code and output of a command whose body raises `error` (real exceptions,
    through the same guard every command uses)."""
    app = typer.Typer()

    @app.command()
    def fail() -> None:
        with user_errors():
            raise error

    result = CliRunner().invoke(app, [])
    return result.exit_code, result.output


def test_faults_met_mid_command_are_errors_not_bugs() -> None:
    code, output = _fails_with(redis.ConnectionError("Connection reset by peer"))
    assert code == 2 and "lost the connection to Redis" in output
    code, output = _fails_with(PermissionError(13, "Permission denied", "/srv/x/corpus.jsonl"))
    assert code == 2 and "cannot use /srv/x/corpus.jsonl: Permission denied" in output
    code, output = _fails_with(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))
    assert code == 2 and "not valid UTF-8" in output
    code, output = _fails_with(KeyError("shape"))  # still a bug
    assert code == 1 and "internal error" in output
