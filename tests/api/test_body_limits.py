"""Request bodies over real HTTP (uvicorn on loopback, planted features, real Redis): a
body over the limit is refused with a 413 while it is still arriving, never read whole;
a JSON body holding a lone surrogate gets a 422 naming the field, on every endpoint."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.server_fixtures import api_key, serving, settings_of

LIMIT = 256 * 1024  # small, so a body over it is quick to send on 2 busy cores


@pytest.fixture(scope="module")
def limited(planted_env: dict[str, str]) -> Iterator[str]:
    with serving(settings_of(planted_env, max_body_bytes=LIMIT)) as url:
        yield url


def _rss() -> int:
    """This process's resident memory in bytes (Linux): uvicorn serves from its thread."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def _reply(sock: socket.socket) -> tuple[bytes, bytes]:
    """(status line and headers, body) of one HTTP response read from `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    assert length is not None, head
    while len(body) < int(length.group(1)):
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {body!r}"
        body += chunk
    return head, body


def test_a_declared_huge_body_is_refused_before_it_is_sent(limited: str) -> None:
    sock = _connect(limited)
    with sock:
        head = (
            "POST /activations HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {100 * 1024 * 1024}\r\n\r\n"
        )
        sock.sendall(head.encode())  # and not one byte of the 100 MB body
        status, body = _reply(sock)
    assert status.startswith(b"HTTP/1.1 413"), status
    assert "GLOSSATOR_MAX_BODY_BYTES" in json.loads(body)["detail"]


def test_a_streamed_huge_body_gets_its_413_while_the_client_is_still_sending(
    limited: str,
) -> None:
    """A chunked body (no Content-Length) of 100 MB: the 413 comes after a little more
    than the limit was sent, and the server's memory does not grow with the body."""
    before = _rss()
    chunk = b"x" * 65536
    total = 100 * 1024 * 1024
    sent = 0
    status, body = b"", b""
    sock = _connect(limited)
    with sock:
        head = (
            "POST /activations HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(head.encode())
        deadline = time.monotonic() + 60
        while sent < total and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1.0)
            if readable:
                status, body = _reply(sock)
                break
            if writable:
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                except (BrokenPipeError, ConnectionResetError):
                    status, body = _reply(sock)
                    break
                sent += len(chunk)
    grown = _rss() - before
    assert status.startswith(b"HTTP/1.1 413"), status
    assert "GLOSSATOR_MAX_BODY_BYTES" in json.loads(body)["detail"]
    assert sent < total / 10, f"the 413 came only after {sent:,} bytes were sent"
    assert grown < 20 * 1024 * 1024, f"the server grew by {grown:,} bytes"


def test_bodies_under_the_limit_still_work(limited: str) -> None:
    fine = httpx.post(f"{limited}/activations", json={"texts": ["I love it"], "features": [0]})
    assert fine.status_code == 200, fine.text
    over = httpx.post(f"{limited}/activations", json={"texts": ["a" * LIMIT]})
    assert over.status_code == 413 and "GLOSSATOR_MAX_BODY_BYTES" in over.json()["detail"]
    assert over.headers["content-type"] == "application/json"


def test_a_lone_surrogate_gets_a_422_naming_the_field_on_every_endpoint(
    limited: str, planted_env: dict[str, str]
) -> None:
    key = {"Authorization": f"Bearer {api_key(planted_env)}", "Content-Type": "application/json"}
    thread = httpx.post(f"{limited}/features/word-love/chat", headers=key, json={}).json()["id"]
    cases = {
        "/activations": (b'{"texts": ["ok", "caf\\udce9"]}', "body.texts.1"),
        f"/chat/{thread}/messages": (b'{"text": "caf\\udce9"}', "body.text"),
        # raw UTF-8 surrogate bytes decode to the same lone surrogate
        "/features/word-love/chat": (b'{"title": "caf\xed\xb3\xa9"}', "body.title"),
    }
    for path, (body, field) in cases.items():
        reply = httpx.post(f"{limited}{path}", content=body, headers=key, timeout=30)
        assert reply.status_code == 422, (path, reply.text)
        detail = reply.json()["detail"]
        assert f"{field}: holds a lone surrogate (\\udce9)" in detail, detail
        assert reply.json()["errors"][0]["type"] == "lone_surrogate"
    paired = b'{"texts": ["smile \\ud83d\\ude00"], "features": [0]}'  # a valid pair
    reply = httpx.post(f"{limited}/activations", content=paired, headers=key, timeout=30)
    assert reply.status_code == 200, reply.text
