"""Pytest plugin: the real HTTP service under uvicorn on loopback, serving planted
features (SmolLM2's tokenizer, evidence built by the CLI over a small corpus), with the
session's real Redis."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from runtime.redis_server import EmbeddedRedis
from runtime.settings import Settings, get_settings
from tests.cli_helpers import planted_cli_env

# Phrases on which several planted features fire (love, computer, colours, animals,
# numbers, days, question marks, quotes, negation, first person, -ing words).
PHRASES = [
    "I love my old dog",
    "they loved the quiet garden",
    "we are loving the new house",
    "the red computer hums softly",
    "two cats sat on a warm mat",
    "nothing happens on a Monday morning",
    "what time is it now?",
    'she said "never again" and left',
    "the blue owl is not singing tonight",
    "three horses were running in the rain",
    "she lives in a small town by the sea",
    "the train was late again today",
]


def planted_texts(n: int = 300, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    return [
        "\n".join(". ".join(rng.sample(PHRASES, 3)) for _ in range(rng.randint(1, 3)))
        for _ in range(n)
    ]


@pytest.fixture(scope="session")
def planted_env(
    tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any, redis_server: EmbeddedRedis
) -> dict[str, str]:
    """GLOSSATOR_* variables of a data dir holding planted evidence (built by the CLI)."""
    root = tmp_path_factory.mktemp("server-planted")
    return planted_cli_env(root, smollm2_tokenizer, redis_server.url, planted_texts())


def settings_of(env: dict[str, str], **overrides: Any) -> Settings:
    fields = {k.removeprefix("GLOSSATOR_").lower(): v for k, v in env.items()}
    return get_settings(**{**fields, **overrides})


@contextmanager
def serving(settings: Settings, planted: bool = True) -> Iterator[str]:
    """The app under a real uvicorn on a free loopback port; its base URL once /ready."""
    from api.server import create_app

    app = create_app(settings, planted=planted)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        while httpx.get(f"{url}/ready").status_code != 200:
            assert time.monotonic() < deadline, httpx.get(f"{url}/ready").text
            time.sleep(0.1)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def service(planted_env: dict[str, str]) -> Iterator[str]:
    """One service per test module (its Redis data is the session's, flushed by tests
    that use `redis_client`)."""
    with serving(settings_of(planted_env)) as url:
        yield url


def api_key(env: dict[str, str], name: str = "tests") -> str:
    """A fresh API key in the session's Redis."""
    from runtime.apikeys import ApiKeyStore
    from runtime.redis_server import open_client

    client = open_client(env["GLOSSATOR_REDIS_URL"], "the test session's Redis")
    try:
        return ApiKeyStore(client).create(f"{name}-{time.monotonic_ns()}")[1]
    finally:
        client.close()


def sse_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event, JSON data) of each Server-Sent Event of a streaming response."""
    kind, data = "message", list[str]()
    for line in response.iter_lines():
        if line == "":
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", list[str]()
        elif line.startswith("event:"):
            kind = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").removeprefix(" "))


def read_stream(url: str, **kwargs: Any) -> list[tuple[str, Any]]:
    with httpx.stream("GET", url, timeout=120, **kwargs) as response:
        assert response.status_code == 200, response.read()
        return list(sse_events(response))
