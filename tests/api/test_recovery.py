"""Recovery over real HTTP: a run whose server was killed (kill -9) is taken over by a
re-POST instead of showing `running` while nothing drives it; a run cut off by a Redis
outage says why and resumes (held mid-way by its LLM, the scripted server of
tests/llm_server.py, so Redis stops after its first checkpoint and before its end); a
malformed Last-Event-ID is refused before the stream starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime.apikeys import ApiKeyStore
from runtime.redis_server import EmbeddedRedis
from tests.agent.test_llm_reasoner import EXPLANATION, by_step, step_of
from tests.cli_helpers import GLOSSATOR
from tests.llm_server import FakeLLMServer, Reply
from tests.server_fixtures import api_key, read_stream, serving, settings_of


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


class HeldLLM:
    """The scripted LLM of tests/llm_server.py answering the agent's steps, except that
    it holds the first `design` request (the run's hypotheses are then checkpointed: it
    runs with durability "sync") until `release()`: the run waits mid-way for the test."""

    def __init__(self) -> None:
        self.held, self.released = threading.Event(), threading.Event()

    def __call__(self, body: dict[str, Any]) -> Reply:
        if step_of(body).startswith("design") and not self.released.is_set():
            self.held.set()
            assert self.released.wait(timeout=180), "the test never released the LLM"
        return by_step(body)

    def release(self) -> None:
        self.released.set()


def _told_by_redis(view: dict[str, Any]) -> bool:
    """A view read from Redis again (with the checkpoint), and the run no longer live."""
    return view["state"] is not None and view["status"] != "running"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test alone, to stop and start again."""
    own = EmbeddedRedis(tmp_path / "redis").start()
    try:
        yield own
    finally:
        own.stop()


def test_a_run_cut_off_by_redis_says_why_and_resumes(
    planted_env: dict[str, str], own_redis: EmbeddedRedis
) -> None:
    client = own_redis.client()
    key = {"Authorization": f"Bearer {ApiKeyStore(client).create('recovery')[1]}"}
    client.close()
    hold = HeldLLM()
    with FakeLLMServer(responder=hold) as llm:
        llm_settings = {"llm_base_url": llm.base_url, "llm_model": llm.model}
        settings = settings_of(
            planted_env, redis_url=own_redis.url, llm_api_key=llm.api_key, **llm_settings
        )
        try:
            with serving(settings) as url:
                runs = f"{url}/features/word-love/runs"
                started = httpx.post(runs, json={"max_rounds": 4}, headers=key, timeout=60)
                assert started.status_code == 202, started.text
                run_id = started.json()["run_id"]
                assert hold.held.wait(timeout=120), "the run never asked to design a test"
                # Held in its second step: hypotheses checkpointed, explanation not yet.
                view = httpx.get(f"{url}/runs/{run_id}", timeout=60).json()
                assert view["status"] == "running" and view["state"]["hypotheses"], view

                own_redis.stop()  # Redis goes away mid-run
                hold.release()  # the run's next step needs Redis
                # Answered from the server's memory while Redis is away (503 until the
                # run has ended): so Redis comes back only after the run found it gone.
                view = _until(url, run_id, lambda v: v["status"] != "running", timeout_s=60)
                assert view["status"] == "interrupted" and "Redis" in view["error"], view
                assert view["state"] is None  # its checkpoint is in Redis

                own_redis.start()
                view = _until(url, run_id, _told_by_redis, timeout_s=60)
                assert view["status"] == "interrupted" and "Redis" in view["error"], view
                assert view["state"]["hypotheses"] and view["state"]["explanation"] is None

                resumed = httpx.post(runs, json={"max_rounds": 4}, headers=key, timeout=60)
                assert resumed.status_code == 202 and resumed.json()["run_id"] == run_id
                view = _until(url, run_id, lambda v: v["status"] != "running", timeout_s=120)
                assert view["status"] == "finished" and view["error"] is None, view
                assert view["state"]["explanation"]["text"] == EXPLANATION
        finally:
            hold.release()  # never leave the server's run waiting on the LLM


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
