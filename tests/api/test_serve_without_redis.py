"""`glossator serve` started while its Redis is down: the real command (a subprocess)
starts anyway, answers 503 on /ready saying it waits for Redis, and 200 once a real
Redis server comes up; it prints no traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from runtime.redis_server import EmbeddedRedis
from tests.cli_helpers import GLOSSATOR


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=10)
    except httpx.TransportError:
        return None


def test_serve_waits_for_redis_and_is_ready_once_it_comes(
    planted_env: dict[str, str], tmp_path: Path
) -> None:
    later = EmbeddedRedis(tmp_path / "later")  # not started yet: nothing on its socket
    env = {**os.environ, **planted_env, "GLOSSATOR_REDIS_URL": later.url}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen(
        [GLOSSATOR, "serve", "--planted", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while (health := _get(f"{url}/health")) is None:
            assert server.poll() is None, Path(log.name).read_text()
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        assert health.status_code == 200
        for _ in range(3):  # it keeps waiting, and keeps saying so
            ready = _get(f"{url}/ready")
            assert ready is not None and ready.status_code == 503, Path(log.name).read_text()
            assert "waiting for Redis" in ready.json()["detail"], ready.text
            time.sleep(1)
        assert server.poll() is None
        later.start()
        while (ready := _get(f"{url}/ready")) is None or ready.status_code != 200:
            assert server.poll() is None, Path(log.name).read_text()
            assert time.monotonic() < deadline + 60, ready and ready.text
            time.sleep(0.5)
        assert ready.json()["status"] == "ready"
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        later.stop()
    output = Path(log.name).read_text()
    assert "Traceback" not in output, output
    assert "waiting for Redis" in output
