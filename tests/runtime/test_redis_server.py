"""The embedded Valkey server and connect(): real servers, real processes, no mocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from runtime.redis_server import (
    EmbeddedRedis,
    RedisUnavailableError,
    connect,
    embedded_server,
    socket_path_for,
)
from runtime.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_fixture_client_round_trip(redis_client: redis.Redis) -> None:
    redis_client.set("glossator:test", "x")
    assert redis_client.get("glossator:test") == b"x"


def test_fixture_flushes_between_tests(redis_client: redis.Redis) -> None:
    assert redis_client.get("glossator:test") is None


def test_listens_on_unix_socket_only(redis_server: EmbeddedRedis) -> None:
    assert redis_server.url == f"unix://{redis_server.socket_path}"
    assert redis_server.pid_file.parent == redis_server.data_dir / "redis"
    config = redis_server.client().config_get("port")
    assert config["port"] == "0"


def test_data_survives_sigkill(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path).start()
    client = server.client()
    client.set("explanation:1", "fires on French articles")
    client.hset("feature:1", mapping={"density": "0.01"})
    client.close()
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    server.stop()  # reaps the killed process
    assert server.pid_file.exists()  # stale: the server had no chance to remove it

    with EmbeddedRedis(tmp_path) as restarted:
        client = restarted.client()
        assert client.get("explanation:1") == b"fires on French articles"
        assert client.hget("feature:1", "density") == b"0.01"
        client.close()


def test_second_instance_reuses_running_server(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as first:
        second = EmbeddedRedis(tmp_path).start()
        assert second.pid == first.pid
        assert first.started_here and not second.started_here
        second.stop()  # not ours: leaves the server running
        assert first.ping()
        # Another process reuses it too.
        code = (
            "from pathlib import Path; from runtime.redis_server import EmbeddedRedis;"
            f"s = EmbeddedRedis(Path({str(tmp_path)!r})).start();"
            "print(s.pid, s.started_here)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
        assert out == [str(first.pid), "False"]
    assert not first.ping()
    assert not first.pid_file.exists()  # a clean shutdown removes it


def test_a_server_in_use_outlives_the_process_that_started_it(tmp_path: Path) -> None:
    """Two commands on one data dir: the one that started the server exits first, and
    the other keeps its Redis; the last user to leave shuts it down."""
    code = (
        "import sys; from pathlib import Path; from runtime.redis_server import embedded_server;"
        f"s = embedded_server(Path({str(tmp_path)!r}));"
        "print(s.pid, s.started_here, flush=True); sys.stdin.readline()"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert owner.stdout is not None and owner.stdin is not None
    pid, started = owner.stdout.readline().split()
    assert started == "True"
    user = EmbeddedRedis(tmp_path).start()
    assert user.pid == int(pid) and not user.started_here
    user.client().set("kept", "1")
    owner.stdin.close()  # the owner exits while this one still uses the server
    assert owner.wait(timeout=30) == 0
    assert user.ping() and user.client().get("kept") == b"1"
    user.stop_unless_shared()  # the last user leaves: the server goes with it
    assert not user.ping()
    assert not user.pid_file.exists()  # a clean shutdown
    with EmbeddedRedis(tmp_path) as again:  # and the data survived it
        assert again.client().get("kept") == b"1"


def test_start_is_idempotent(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        pid = server.pid
        server.start()
        assert server.pid == pid and server.started_here


def test_stale_pid_file_and_socket(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    server.redis_dir.mkdir(parents=True)
    server.pid_file.write_text(f"{dead_pid()}\n")
    server.socket_path.touch()  # leftover socket file, nothing listening
    with server:
        assert server.started_here
        assert server.pid_file.read_text().strip() == str(server.pid)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_pid_file_naming_an_unrelated_live_process(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    server.redis_dir.mkdir(parents=True)
    server.pid_file.write_text(str(os.getpid()))  # alive, but pytest, not Valkey
    with server:
        assert server.started_here and server.pid != os.getpid()


def test_long_data_dir_uses_short_socket(tmp_path: Path) -> None:
    data_dir = tmp_path / ("d" * 60) / ("e" * 60)
    with EmbeddedRedis(data_dir) as server:
        assert str(server.socket_path).startswith("/tmp/glossator-")
        assert server.socket_path == socket_path_for(data_dir / "redis")
        assert server.pid_file.parent == data_dir / "redis"
        assert server.client().ping()
    assert not server.socket_path.exists()


def test_start_failure_shows_the_log(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    server.redis_dir.mkdir(parents=True)
    # An AOF manifest Valkey cannot parse: the server refuses to start.
    (server.redis_dir / "appendonlydir").mkdir()
    (server.redis_dir / "appendonlydir" / "appendonly.aof.manifest").write_text("garbage\n")
    with pytest.raises(RedisUnavailableError, match="exited with code") as caught:
        server.start()
    assert "valkey.log" in str(caught.value)
    assert not server.started_here


def test_connect_embedded_and_reuse(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    client = connect(settings, decode_responses=True)
    client.set("k", "v")
    server = embedded_server(tmp_path)
    assert server.started_here
    again = connect(settings, decode_responses=True)
    assert again.get("k") == "v"
    client.close()
    again.close()
    server.stop()


def test_connect_to_url(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    client = connect(Settings(data_dir=tmp_path, redis_url=redis_server.url))
    assert client.ping()
    client.close()
    assert not (tmp_path / "redis").exists()  # no embedded server was started


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:1", "redis://:hunter2@127.0.0.1:1/0", "unix:///nonexistent.sock"]
)
def test_unreachable_url(url: str, tmp_path: Path) -> None:
    with pytest.raises(RedisUnavailableError) as caught:
        connect(Settings(data_dir=tmp_path, redis_url=url))
    message = str(caught.value)
    assert "GLOSSATOR_REDIS_URL" in message
    assert "unset it" in message
    assert "hunter2" not in message
    assert url.replace("hunter2", "***") in message


def test_dead_server_url(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "gone") as server:
        url = server.url
    with pytest.raises(RedisUnavailableError, match="Cannot reach Redis at unix://"):
        connect(Settings(data_dir=tmp_path, redis_url=url))
