"""Pytest plugin: a real embedded Valkey server for the whole session, and a client on it
that is flushed after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from runtime.redis_server import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A real Valkey server in a temporary data dir, stopped at the end of the session."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-data"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client on the session's server; the database is flushed after the test."""
    client = redis_server.client()
    yield client
    client.flushdb()
    client.close()
