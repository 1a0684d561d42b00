"""Quotas over real HTTP and real Redis: chat threads and open jobs per API key, and the
token bucket of anonymous POST /activations, each answering 429 with a clear detail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from runtime.apikeys import ApiKeyStore
from runtime.redis_server import open_client
from tests.server_fixtures import serving, settings_of

BUCKET = "glossator:rate:activations:127.0.0.1"  # what this test's requests come from


@pytest.fixture(scope="module")
def tight(planted_env: dict[str, str]) -> Iterator[tuple[str, Any]]:
    """A service with small quotas, and a client on its Redis."""
    settings = settings_of(
        planted_env,
        max_chat_threads_per_key=2,
        max_open_jobs_per_key=1,
        anonymous_texts_per_minute=3,
    )
    client = open_client(planted_env["GLOSSATOR_REDIS_URL"], "tests")
    client.delete(BUCKET)
    try:
        with serving(settings) as url:
            yield url, client
    finally:
        client.delete(BUCKET)  # other modules' anonymous requests share the address
        client.close()


def _key(client: Any) -> dict[str, str]:
    token = ApiKeyStore(client).create(f"quota-{time.monotonic_ns()}")[1]
    return {"Authorization": f"Bearer {token}"}


def test_a_key_starts_at_most_its_quota_of_chat_threads(tight: tuple[str, Any]) -> None:
    url, client = tight
    first, second = _key(client), _key(client)
    for _ in range(2):
        assert httpx.post(f"{url}/features/0/chat", headers=first).status_code == 201
    over = httpx.post(f"{url}/features/0/chat", headers=first)
    assert over.status_code == 429, over.text
    assert "GLOSSATOR_MAX_CHAT_THREADS_PER_KEY" in over.json()["detail"]
    assert httpx.post(f"{url}/features/0/chat", headers=second).status_code == 201  # per key
    mine = [t for t in httpx.get(f"{url}/features/0/chat").json() if t["owner"]]
    assert len(mine) >= 3


def test_a_key_has_at_most_its_quota_of_open_jobs(tight: tuple[str, Any]) -> None:
    url, client = tight
    key = _key(client)
    body = {"features": [0], "new": True}
    first = httpx.post(f"{url}/jobs", json=body, headers=key)
    assert first.status_code == 202, first.text
    over = httpx.post(f"{url}/jobs", json=body, headers=key)
    assert over.status_code == 429 and "GLOSSATOR_MAX_OPEN_JOBS_PER_KEY" in over.text
    job = first.json()["job"]["id"]
    assert httpx.post(f"{url}/jobs/{job}/cancel", headers=key).status_code == 200
    refused = httpx.post(f"{url}/jobs", json={"features": [99]}, headers=key)
    assert refused.status_code == 422  # a cancelled job counts no more, nor a refused one
    again = httpx.post(f"{url}/jobs", json=body, headers=key)
    assert again.status_code == 202, again.text
    httpx.post(f"{url}/jobs/{again.json()['job']['id']}/cancel", headers=key)


def test_anonymous_activations_are_rate_limited_per_address(tight: tuple[str, Any]) -> None:
    url, client = tight
    body = {"texts": ["I love it", "the red car"], "features": [0]}
    assert httpx.post(f"{url}/activations", json=body).status_code == 200
    limited = httpx.post(f"{url}/activations", json=body)
    assert limited.status_code == 429, limited.text
    wait = int(limited.headers["Retry-After"])
    assert 1 <= wait <= 60 and "3 texts a minute" in limited.json()["detail"]
    keyed = httpx.post(f"{url}/activations", json=body, headers=_key(client))
    assert keyed.status_code == 200  # a key's caller is accountable: not limited here
    bad_key = httpx.post(f"{url}/activations", json=body, headers={"X-API-Key": "glsk_x"})
    assert bad_key.status_code == 401  # a wrong key is no way around the limit
    time.sleep(wait)
    assert httpx.post(f"{url}/activations", json=body).status_code == 200
