"""API keys, run slots, the FastAPI dependencies and `glossator apikey`, on a real Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import redis
import typer
from fastapi import FastAPI, Request
from redis.backoff import NoBackoff
from redis.retry import Retry
from typer.testing import CliRunner

from api.server_auth import ApiKey, ReadAccess, check_feature_count, check_texts, run_slot
from cli.apikey import apikey_app
from runtime.apikeys import ApiKeyError, ApiKeyStore, InvalidApiKey, KeyInfo, RunSlots, TooManyRuns
from runtime.redis_server import EmbeddedRedis
from runtime.settings import Settings


def all_stored_bytes(client: Any) -> bytes:
    """Every key and value in the database, concatenated."""
    chunks: list[bytes] = []
    for key in client.scan_iter():
        chunks.append(key)
        kind = client.type(key)
        if kind == b"hash":
            for field, value in client.hgetall(key).items():
                chunks += [field, value]
        elif kind == b"zset":
            chunks += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
    return b"\n".join(chunks)


def test_create_verify_revoke_list(redis_client: redis.Redis) -> None:
    store = ApiKeyStore(redis_client)
    info, token = store.create("alice")
    other, other_token = store.create("ci")
    assert token.startswith(f"glsk_{info.id}_") and len(token) > 50
    assert info.active and info.last_used_at is None and other.id != info.id

    verified = store.verify(token)
    assert (verified.id, verified.name) == (info.id, "alice")
    assert verified.last_used_at is not None
    assert store.verify(other_token).name == "ci"

    stored = all_stored_bytes(redis_client)
    secret = token.split("_", 2)[2]
    assert token.encode() not in stored and secret.encode() not in stored
    assert b"alice" in stored  # the scan did see the key's record

    revoked = store.revoke("alice")
    assert revoked.id == info.id and revoked.revoked_at is not None
    with pytest.raises(InvalidApiKey, match="revoked") as caught:
        store.verify(token)
    assert secret not in str(caught.value)
    assert store.verify(other_token).name == "ci"  # only that key was revoked

    mine = {info.id, other.id}  # other tests' keys may share this Redis
    listed = [k for k in store.list() if k.id in mine]
    assert [(k.id, k.name, k.active) for k in listed] == [
        (info.id, "alice", False),
        (other.id, "ci", True),
    ]
    assert listed[0].last_used_at == verified.last_used_at
    # Revoking again changes nothing; the freed name can be reused by a new key.
    assert store.revoke(info.id).revoked_at == revoked.revoked_at
    renewed, _ = store.create("alice")
    assert renewed.id != info.id


def test_invalid_tokens_say_why(redis_client: redis.Redis) -> None:
    store = ApiKeyStore(redis_client)
    info, token = store.create("alice")
    secret = token.split("_", 2)[2]
    with pytest.raises(InvalidApiKey, match="malformed"):
        store.verify("not-a-token")
    with pytest.raises(InvalidApiKey, match="unknown"):
        store.verify(f"glsk_{'0' * 16}_{secret}")
    wrong = f"glsk_{info.id}_{'A' * 43}"
    with pytest.raises(InvalidApiKey, match="unknown") as caught:
        store.verify(wrong)
    assert "A" * 43 not in str(caught.value)


def test_names_are_unique_among_active_keys(redis_client: redis.Redis) -> None:
    store = ApiKeyStore(redis_client)
    store.create("alice")
    with pytest.raises(ApiKeyError, match="already named 'alice'"):
        store.create("alice")
    for bad in ["", "has space", "0123456789abcdef"]:
        with pytest.raises(ApiKeyError, match="invalid key name"):
            store.create(bad)
    with pytest.raises(ApiKeyError, match="no API key"):
        store.revoke("bob")


def test_dead_redis_is_a_clear_error(tmp_path: Any) -> None:
    client = redis.Redis(unix_socket_path=str(tmp_path / "none.sock"), retry=Retry(NoBackoff(), 0))
    with pytest.raises(ApiKeyError, match="Redis is unreachable"):
        ApiKeyStore(client).verify(f"glsk_{'0' * 16}_{'A' * 43}")


def test_slots_admit_up_to_the_limit(redis_client: redis.Redis) -> None:
    slots = RunSlots(redis_client, 2)
    assert slots.acquire("k1", "run-a") == 1
    assert slots.acquire("k1", "run-b") == 2
    with pytest.raises(TooManyRuns, match="the limit is 2"):
        slots.acquire("k1", "run-c")
    assert slots.acquire("k2", "run-c") == 1  # limits are per key
    slots.release("k1", "run-a")
    assert slots.acquire("k1", "run-c") == 2
    assert sorted(slots.running("k1")) == ["run-b", "run-c"]


def test_a_crashed_holders_slot_expires(redis_client: redis.Redis) -> None:
    slots = RunSlots(redis_client, 2, ttl_s=0.6)
    slots.acquire("k1", "crashed")  # never released nor refreshed
    slots.acquire("k1", "alive")
    with pytest.raises(TooManyRuns):
        slots.acquire("k1", "next")
    time.sleep(0.4)
    slots.refresh("k1", "alive")  # keeps the set itself alive past the crashed slot's expiry
    time.sleep(0.4)
    assert slots.acquire("k1", "next") == 2
    assert sorted(slots.running("k1")) == ["alive", "next"]


def test_hold_refreshes_its_slot_and_releases_it(redis_client: redis.Redis) -> None:
    slots = RunSlots(redis_client, 1, ttl_s=0.5)

    async def main() -> None:
        async with slots.hold("k1", "long-run"):
            await asyncio.sleep(1.6)  # over 3 TTLs: only the heartbeat keeps the slot
            with pytest.raises(TooManyRuns):
                await asyncio.to_thread(slots.acquire, "k1", "other")
            assert slots.running("k1") == ["long-run"]
        assert slots.running("k1") == []

    asyncio.run(main())


def auth_app(client: redis.Redis, **settings: Any) -> FastAPI:
    app = FastAPI()
    app.state.settings = Settings(**settings)
    app.state.redis = client

    @app.post("/explain")
    def explain(key: ApiKey) -> dict[str, str]:
        return {"key": key.id}

    @app.get("/feature")
    def feature(key: ReadAccess) -> dict[str, str | None]:
        return {"key": key.id if key else None}

    @app.post("/texts")
    def texts(body: dict[str, list[str]]) -> dict[str, int]:
        check_texts(body["texts"], app.state.settings)
        check_feature_count(len(body.get("features", ["0"])), app.state.settings)
        return {"n": len(body["texts"])}

    return app


def call(app: FastAPI, go: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]) -> Any:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await go(client)

    return asyncio.run(main())


def test_writes_need_a_valid_key(redis_client: redis.Redis) -> None:
    store = ApiKeyStore(redis_client)
    info, token = store.create("alice")
    app = auth_app(redis_client)

    missing = call(app, lambda c: c.post("/explain"))
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "needs an API key" in missing.json()["detail"]

    wrong = call(app, lambda c: c.post("/explain", headers={"X-API-Key": "glsk_nope"}))
    assert wrong.status_code == 401 and "malformed" in wrong.json()["detail"]
    basic = call(app, lambda c: c.post("/explain", headers={"Authorization": "Basic eDp5"}))
    assert basic.status_code == 401 and "Bearer" in basic.json()["detail"]

    bearer = call(app, lambda c: c.post("/explain", headers={"Authorization": f"Bearer {token}"}))
    assert bearer.status_code == 200 and bearer.json() == {"key": info.id}
    header = call(app, lambda c: c.post("/explain", headers={"X-API-Key": token}))
    assert header.status_code == 200

    store.revoke(info.id)
    revoked = call(app, lambda c: c.post("/explain", headers={"X-API-Key": token}))
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    assert token.split("_", 2)[2] not in revoked.text


def test_reads_are_open_unless_configured(redis_client: redis.Redis) -> None:
    _, token = ApiKeyStore(redis_client).create("alice")
    open_reads = call(auth_app(redis_client), lambda c: c.get("/feature"))
    assert open_reads.status_code == 200 and open_reads.json() == {"key": None}

    closed = auth_app(redis_client, read_requires_key=True)
    assert call(closed, lambda c: c.get("/feature")).status_code == 401
    keyed = call(closed, lambda c: c.get("/feature", headers={"X-API-Key": token}))
    assert keyed.status_code == 200 and keyed.json()["key"] is not None


def test_limits_name_the_limit_and_the_text(redis_client: redis.Redis) -> None:
    app = auth_app(redis_client, max_text_chars=10, max_texts_per_request=3, max_features_per_job=2)

    def post(body: dict[str, list[str]]) -> httpx.Response:
        return call(app, lambda c: c.post("/texts", json=body))

    assert post({"texts": ["short", "also short"]}).json() == {"n": 2}
    too_long = post({"texts": ["short", "far too long a text"]})
    assert too_long.status_code == 413
    assert "text 1 has 19 characters; the limit is 10" in too_long.json()["detail"]
    too_many = post({"texts": ["a", "b", "c", "d"]})
    assert too_many.status_code == 413 and "the limit is 3" in too_many.json()["detail"]
    assert post({"texts": []}).status_code == 422
    assert post({"texts": ["a", " "]}).json()["detail"] == "text 1 is empty"
    features = post({"texts": ["a"], "features": ["1", "2", "3"]})
    assert features.status_code == 413 and "the limit is 2" in features.json()["detail"]


def test_run_slot_is_429_at_the_limit(redis_client: redis.Redis) -> None:
    app = FastAPI()
    app.state.settings = Settings(max_runs_per_key=1)
    app.state.redis = redis_client
    release = asyncio.Event()

    @app.post("/run/{run_id}")
    async def run(run_id: str, key: ApiKey, request: Request) -> dict[str, str]:
        async with run_slot(request, key, run_id):
            await release.wait()
        return {"done": run_id}

    info, token = ApiKeyStore(redis_client).create("alice")
    headers = {"X-API-Key": token}
    slots = RunSlots(redis_client, 1)

    async def main() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = asyncio.create_task(client.post("/run/a", headers=headers))
            while not slots.running(info.id):  # the first run holds its slot
                await asyncio.sleep(0.01)
            second = await client.post("/run/b", headers=headers)
            release.set()
            done = await first
            third = await client.post("/run/c", headers=headers)
        return second, done, third

    second, done, third = asyncio.run(main())
    assert second.status_code == 429 and "the limit is 1" in second.json()["detail"]
    assert done.json() == {"done": "a"}
    assert third.json() == {"done": "c"}  # the first run's slot was released


def test_cli_create_list_revoke(
    redis_server: EmbeddedRedis, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLOSSATOR_REDIS_URL", redis_server.url)
    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so `apikey` stays a subcommand
    app.add_typer(apikey_app, name="apikey")
    runner = CliRunner()

    created = runner.invoke(app, ["apikey", "create", "ci", "--json"])
    assert created.exit_code == 0, created.output
    document = json.loads(created.stdout)
    assert ApiKeyStore(redis_client).verify(document["token"]).id == document["id"]

    shown = runner.invoke(app, ["apikey", "create", "alice"])
    assert shown.exit_code == 0, shown.output
    token = shown.stdout.strip()
    assert token.startswith("glsk_") and "cannot be shown again" in shown.stderr

    listed = runner.invoke(app, ["apikey", "list", "--json"])
    keys = json.loads(listed.stdout)
    assert [k["name"] for k in keys] == ["ci", "alice"]
    assert token not in listed.stdout and "glsk_" not in listed.stdout
    assert all("token" not in k and "token_sha256" not in k for k in keys)

    revoked = runner.invoke(app, ["apikey", "revoke", "alice"])
    assert revoked.exit_code == 0 and "revoked API key" in revoked.stdout
    with pytest.raises(InvalidApiKey, match="revoked"):
        ApiKeyStore(redis_client).verify(token)
    table = runner.invoke(app, ["apikey", "list"])
    assert "alice" in table.stdout and "revoked" in table.stdout and "active" in table.stdout

    again = runner.invoke(app, ["apikey", "revoke", "nobody"])
    assert again.exit_code == 2 and "no API key" in again.stderr


def test_key_info_never_carries_the_hash() -> None:
    assert "token_sha256" not in KeyInfo.model_fields
