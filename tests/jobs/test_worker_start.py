"""`glossator worker` started before its Redis: it waits, saying so once (it used to exit
at once with an error), and serves the queue as soon as the server comes up. A real
worker process, a real Valkey server started late on the URL the worker was given."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from runtime.redis_server import EmbeddedRedis
from tests.cli_helpers import GLOSSATOR

pytestmark = pytest.mark.slow  # a real worker process


def wait_for_text(log: Path, text: str, worker: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The worker's output once it holds `text`; fails if the worker exits first."""
    deadline = time.monotonic() + timeout_s
    while text not in (output := log.read_text(errors="replace")):
        assert worker.poll() is None, f"the worker exited ({worker.returncode}):\n{output}"
        assert time.monotonic() < deadline, f"no {text!r} after {timeout_s:g} s:\n{output}"
        time.sleep(0.2)
    return output


def test_a_worker_waits_for_a_redis_that_is_down_at_start(
    planted_env: dict[str, str], tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "late-redis")  # its socket does not exist yet
    env = {**os.environ, **planted_env, "GLOSSATOR_REDIS_URL": server.url}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [GLOSSATOR, "worker", "--planted"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_text(log, "waiting for Redis", worker, timeout_s=120)
        time.sleep(3)  # three more tries: still waiting, and said once
        output = wait_for_text(log, "waiting for Redis", worker, timeout_s=1)
        assert output.count("waiting for Redis") == 1 and "Traceback" not in output, output
        server.start()
        wait_for_text(log, "runs at once", worker, timeout_s=60)  # serving the queue
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        server.stop()
