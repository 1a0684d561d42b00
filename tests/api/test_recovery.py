"""Recovery over real HTTP: a run whose server was killed (kill -9) is taken over by a
re-POST instead of showing `running` while nothing drives it; a run cut off by a Redis
outage says why; a malformed Last-Event-ID is refused before the stream starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Any

import httpx

from tests.cli_helpers import GLOSSATOR
from tests.server_fixtures import api_key, read_stream


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _until(url: str, run_id: str, done: Any, timeout_s: float) -> dict[str, Any]:
    """The run's view once `done(view)`; fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        reply = httpx.get(f"{url}/runs/{run_id}", timeout=60)
        if reply.status_code == 200 and done(view := reply.json()):
            return view
        assert time.monotonic() < deadline, reply.text
        time.sleep(0.3)


def test_a_run_of_a_killed_server_is_taken_over_by_a_post(
    service: str, planted_env: dict[str, str]
) -> None:
    key = {"Authorization": f"Bearer {api_key(planted_env)}"}
    body = {"max_rounds": 3, "max_probes": 37}  # a run no other test starts
    port = _free_port()
    doomed = subprocess.Popen(
        [GLOSSATOR, "serve", "--planted", "--port", str(port)],
        env={**os.environ, **planted_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        other = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{other}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert doomed.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        started = httpx.post(f"{other}/features/word-love/runs", json=body, headers=key)
        assert started.status_code == 202, started.text
    finally:
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()
    run_id = started.json()["run_id"]

    # Its lease still stands; a re-POST takes the run over (after a clear 409 while the
    # dead holder's last beat is fresh), long before the lease would have lapsed (30 s).
    killed_at = time.monotonic()
    while (
        again := httpx.post(f"{service}/features/word-love/runs", json=body, headers=key)
    ).status_code == 409:
        assert "POST again" in again.json()["detail"]
        time.sleep(int(again.headers["Retry-After"]))
    assert again.status_code == 202 and again.json()["run_id"] == run_id, again.text
    assert time.monotonic() - killed_at < 25  # the lease itself lapses only at 30 s
    view = _until(service, run_id, lambda v: v["status"] != "running", timeout_s=120)
    assert view["status"] == "finished", view


def test_a_malformed_last_event_id_is_refused_before_the_stream(
    service: str, planted_env: dict[str, str]
) -> None:
    key = {"Authorization": f"Bearer {api_key(planted_env)}"}
    started = httpx.post(f"{service}/features/word-love/runs", json={"new": True}, headers=key)
    run_id = started.json()["run_id"]
    events = f"{service}/runs/{run_id}/events"
    for bad in (
        "184467440737095516160",
        "1-184467440737095516160",
        "abc",
        "1-2-3",
        "-1",
        "9" * 5000,
    ):
        reply = httpx.get(events, headers={"Last-Event-ID": bad}, timeout=30)
        assert reply.status_code == 400, (bad[:30], reply.text)
        assert "Last-Event-ID" in reply.json()["detail"] and len(reply.text) < 400
    replay = read_stream(events)
    assert replay[-1][0] == "done"
    largest = f"{2**64 - 1}-{2**64 - 1}"  # valid, after every event: the run's end alone
    tail = read_stream(events, headers={"Last-Event-ID": largest})
    assert [kind for kind, _ in tail] == ["done"]
