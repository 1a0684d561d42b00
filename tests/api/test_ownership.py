"""Owners over real HTTP and real Redis: jobs, chat threads, agent runs and benchmark
runs belong to the API key that made them. Another key may read them but not cancel,
write into or resume them (403); an admin key may; things made before owners were
recorded are admin-only to change."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agent.chat import ChatStore
from agent.explanations import Subject
from agent.state import Budget
from identifiers.runs import RunId, parse_run_id
from jobs.explain_jobs import JobSpec, JobStore
from runtime import run_events
from runtime.apikeys import ApiKeyStore, KeyInfo
from runtime.redis_server import open_client
from runtime.runs import run_key
from tests.cli_helpers import run_cli
from tests.server_fixtures import settings_of, sse_events


@dataclass
class Caller:
    info: KeyInfo
    headers: dict[str, str]


@pytest.fixture(scope="module")
def redis_of(planted_env: dict[str, str]) -> Iterator[Any]:
    client = open_client(planted_env["GLOSSATOR_REDIS_URL"], "tests")
    yield client
    client.close()


def _caller(client: Any, name: str, admin: bool = False) -> Caller:
    info, token = ApiKeyStore(client).create(f"{name}-{time.monotonic_ns()}", admin=admin)
    return Caller(info, {"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def callers(redis_of: Any) -> dict[str, Caller]:
    return {name: _caller(redis_of, name, name == "admin") for name in ("a", "b", "admin")}


def _forbidden(reply: httpx.Response, *words: str) -> None:
    assert reply.status_code == 403, reply.text
    detail = reply.json()["detail"]
    assert "only its owner or an admin key" in detail and all(w in detail for w in words), detail


def test_admin_keys_are_made_and_listed_by_the_cli(
    redis_of: Any, planted_env: dict[str, str]
) -> None:
    made = run_cli("apikey", "create", "--admin", f"root-{time.monotonic_ns()}", env=planted_env)
    assert made.returncode == 0 and "created admin API key" in made.stderr, made.stderr
    plain, _ = ApiKeyStore(redis_of).create(f"plain-{time.monotonic_ns()}")
    shown = run_cli("apikey", "list", "--json", env=planted_env)
    listed = {key["id"]: key["admin"] for key in json.loads(shown.stdout)}
    admin_id = made.stdout.strip().split("_")[1]  # glsk_<id>_<secret>
    assert listed[admin_id] is True and listed[plain.id] is False
    table = run_cli("apikey", "list", env={**planted_env, "COLUMNS": "200"}).stdout
    assert "admin" in next(line for line in table.splitlines() if admin_id in line)
    # A record written before the flag existed reads as a plain key.
    record = f"glossator:apikey:{plain.id}"
    raw = redis_of.hget(record, "record").decode().replace(',"admin":false', "")
    redis_of.hset(record, "record", raw)
    assert next(k for k in ApiKeyStore(redis_of).list() if k.id == plain.id).admin is False


def test_only_its_owner_or_an_admin_cancels_a_job(
    service: str, callers: dict[str, Caller], redis_of: Any
) -> None:
    a, b, admin = callers["a"], callers["b"], callers["admin"]
    queued = httpx.post(f"{service}/jobs", json={"features": [0], "new": True}, headers=a.headers)
    assert queued.status_code == 202, queued.text
    job = queued.json()["job"]
    assert job["owner"] == a.info.id
    _forbidden(httpx.post(f"{service}/jobs/{job['id']}/cancel", headers=b.headers), a.info.id)
    assert httpx.get(f"{service}/jobs/{job['id']}").json()["job"]["state"] == "queued"
    mine = httpx.post(f"{service}/jobs/{job['id']}/cancel", headers=a.headers)
    assert mine.status_code == 200 and mine.json()["job"]["state"] == "cancelled"

    # A job recorded before owners existed (no owner field) still loads; admins only.
    ready = httpx.get(f"{service}/ready").json()
    spec = JobSpec(features=[2], subject="old", evidence=ready["evidence"])
    old = JobStore(redis_of).create(spec)
    shown = httpx.get(f"{service}/jobs/{old.id}").json()["job"]
    assert shown["owner"] is None and shown["state"] == "queued"
    _forbidden(httpx.post(f"{service}/jobs/{old.id}/cancel", headers=a.headers), "before owners")
    by_admin = httpx.post(f"{service}/jobs/{old.id}/cancel", headers=admin.headers)
    assert by_admin.status_code == 200 and by_admin.json()["job"]["state"] == "cancelled"


def _say(url: str, thread: str, text: str, headers: dict[str, str]) -> list[str]:
    with httpx.stream(
        "POST", f"{url}/chat/{thread}/messages", json={"text": text}, headers=headers, timeout=120
    ) as response:
        assert response.status_code == 200, response.read()
        return [kind for kind, _ in sse_events(response)]


def test_only_its_owner_or_an_admin_writes_into_a_chat_thread(
    service: str, callers: dict[str, Caller], redis_of: Any
) -> None:
    a, b, admin = callers["a"], callers["b"], callers["admin"]
    created = httpx.post(f"{service}/features/word-love/chat", headers=a.headers, json={})
    assert created.status_code == 201 and created.json()["owner"] == a.info.id
    thread = created.json()["id"]
    intruder = httpx.post(
        f"{service}/chat/{thread}/messages", json={"text": 'test: "hi"'}, headers=b.headers
    )
    _forbidden(intruder, a.info.id, "write into")
    assert httpx.get(f"{service}/chat/{thread}").json()["messages"] == []  # reads stay open
    assert _say(service, thread, 'test: "I love dogs"', admin.headers)[-1] == "done"

    # A thread stored before owners existed (no owner field) still loads; admins only.
    ready = httpx.get(f"{service}/ready").json()
    subject = Subject.model_validate(ready["subject"])
    old = ChatStore(redis_of, subject).create(0)
    raw = redis_of.get(ChatStore(redis_of, subject).thread_key(old.id)).decode()
    redis_of.set(ChatStore(redis_of, subject).thread_key(old.id), raw.replace(',"owner":null', ""))
    assert httpx.get(f"{service}/chat/{old.id}").json()["thread"]["owner"] is None
    late = httpx.post(
        f"{service}/chat/{old.id}/messages", json={"text": 'test: "hi"'}, headers=a.headers
    )
    _forbidden(late, "before owners")


def _wait_for(url: str, run_id: str, status: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (view := httpx.get(f"{url}/runs/{run_id}", timeout=60).json())["status"] != status:
        assert time.monotonic() < deadline, view
        time.sleep(0.3)
    return view


def test_only_its_owner_or_an_admin_resumes_a_run(
    service: str, callers: dict[str, Caller], redis_of: Any, planted_env: dict[str, str]
) -> None:
    a, b, admin = callers["a"], callers["b"], callers["admin"]
    runs = f"{service}/features/word-love/runs"
    started = httpx.post(runs, json={"max_rounds": 1}, headers=a.headers)
    assert started.status_code == 202, started.text
    run = _wait_for(service, started.json()["run_id"], "finished")
    assert run["owner"] == a.info.id
    # Another key's POST of a finished run changes nothing: it reads it.
    again = httpx.post(runs, json={"max_rounds": 1}, headers=b.headers)
    assert again.status_code == 202 and again.json()["status"] == "finished"

    # The run A began with two rounds, cut off before its first step (as by a crash).
    ran = parse_run_id(run["run_id"])
    assert ran is not None
    budget = Budget(max_rounds=2, max_probe_texts=60)  # as the route builds it
    reasoner = httpx.get(f"{service}/ready").json()["reasoner"]
    config = run_key(budget, reasoner, settings_of(planted_env))
    cut = str(RunId(ran.subject, ran.evidence, ran.feature, config))
    redis_of.set(run_events.owner_key(cut), a.info.id)
    refused = httpx.post(runs, json={"max_rounds": 2}, headers=b.headers)
    _forbidden(refused, a.info.id, "resume", '"new": true')
    assert httpx.get(f"{service}/runs/{cut}").status_code == 404  # B started nothing
    fresh = httpx.post(runs, json={"max_rounds": 2, "new": True}, headers=b.headers)
    assert fresh.status_code == 202 and fresh.json()["owner"] == b.info.id
    resumed = httpx.post(runs, json={"max_rounds": 2}, headers=admin.headers)
    assert resumed.status_code == 202 and resumed.json()["run_id"] == cut
    _wait_for(service, cut, "finished")
    _wait_for(service, fresh.json()["run_id"], "finished")


def test_only_its_owner_or_an_admin_resumes_a_benchmark(
    service: str, callers: dict[str, Caller], redis_of: Any
) -> None:
    a, b, admin = callers["a"], callers["b"], callers["admin"]
    body = {"features": [0], "explainers": ["toptokens"], "scorers": ["truth"], "run": "owned"}

    def finished() -> dict[str, Any]:
        deadline = time.monotonic() + 120
        while (view := httpx.get(f"{service}/bench/owned", timeout=60).json())[
            "status"
        ] == "running":
            assert time.monotonic() < deadline, view
            time.sleep(0.3)
        return view

    assert httpx.post(f"{service}/bench", json=body, headers=a.headers).status_code == 202
    assert finished()["status"] == "finished"
    assert redis_of.get("glossator:bench:owned:owner").decode() == a.info.id
    redis_of.delete("glossator:bench:owned:scores")  # cut off before its scores
    _forbidden(httpx.post(f"{service}/bench", json=body, headers=b.headers), a.info.id)
    redis_of.delete("glossator:bench:owned:owner")  # as if stored before owners existed
    _forbidden(httpx.post(f"{service}/bench", json=body, headers=a.headers), "before owners")
    assert httpx.post(f"{service}/bench", json=body, headers=admin.headers).status_code == 202
    assert finished()["status"] == "finished"
