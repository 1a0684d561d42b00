"""A real OpenAI-compatible chat-completions server on loopback, for tests.

It stands in for a paid service, so it speaks the real protocol over real HTTP: the
`openai` library talks to it exactly as it would to api.openai.com, vLLM or Ollama.
Replies are scripted in order (`push`); once they run out, a `responder` (when set)
answers from the request itself, e.g. by what its prompt asks, or with junk forever.
Every request body is recorded (`requests`).

    with FakeLLMServer() as server:
        server.push(Reply.json({"label": "French"}), Reply.error(429, retry_after="1"))
        client = AsyncOpenAI(base_url=server.base_url, api_key=server.api_key)
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

# One generated token: its text, its log-probability, and the top alternatives.
ScriptedToken = tuple[str, float, list[tuple[str, float]]]


@dataclass(frozen=True)
class Reply:
    """One scripted answer to one chat-completions request."""

    content: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error_message: str = ""
    delay_s: float = 0.0  # sleep before answering (longer than the client timeout = timeout)
    finish_reason: str = "stop"
    prompt_tokens: int | None = None  # None: counted from the request's words
    completion_tokens: int | None = None  # None: counted from the content's words
    logprobs: list[ScriptedToken] | None = None  # sent only when the request asks

    @classmethod
    def json(cls, obj: Any, **kw: Any) -> Reply:
        return cls(content=json.dumps(obj), **kw)

    @classmethod
    def text(cls, content: str, **kw: Any) -> Reply:
        """Any text as the message content: free text, or malformed JSON."""
        return cls(content=content, **kw)

    @classmethod
    def error(cls, status: int, *, retry_after: str | None = None, **kw: Any) -> Reply:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return cls(status=status, headers=headers, error_message=f"scripted {status}", **kw)


# Answers a request (its JSON body) when no scripted reply is left.
Responder = Callable[[dict[str, Any]], Reply]


@dataclass
class _State:
    replies: deque[Reply] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


class FakeLLMServer:
    """A ThreadingHTTPServer on 127.0.0.1 (a free port) serving `/v1/chat/completions`
    and `/v1/models`, run in a background thread; use it as a context manager."""

    def __init__(
        self,
        *,
        model: str = "fake-model",
        api_key: str = "test-key",
        response_formats: frozenset[str] = frozenset({"text", "json_object", "json_schema"}),
        responder: Responder | None = None,
    ) -> None:
        self.model = model
        self.api_key = api_key
        # Formats this server accepts in `response_format`; others get a 400, like a
        # server that does not know them (for the client's fallback).
        self.response_formats = response_formats
        # Answers requests once the script runs out; None: those get a 400.
        self.responder = responder
        self._state = _State()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        # A short poll interval: stop() returns quickly.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *replies: Reply) -> None:
        """Queue replies, answered in order; with none left the `responder` answers,
        or without one a request gets a 400."""
        with self._state.lock:
            self._state.replies.extend(replies)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of every chat-completions request received, in order."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """The headers of every chat-completions request, names in lower case."""
        with self._state.lock:
            return list(self._state.headers)

    @property
    def max_in_flight(self) -> int:
        """The most chat-completions requests ever being answered at the same time."""
        return self._state.max_in_flight

    @property
    def pending(self) -> int:
        """Scripted replies not yet used."""
        with self._state.lock:
            return len(self._state.replies)

    def start(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._state.stopping.set()  # wakes handlers sleeping on a scripted delay
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- request handling (called from the server's threads) ------------------------

    def _next_reply(self, body: dict[str, Any], headers: dict[str, str]) -> Reply | None:
        """Record the request; the next scripted reply (or the responder's), unless the
        request is rejected for its `response_format` (then the reply is kept for the
        retried request)."""
        fmt = (body.get("response_format") or {}).get("type")
        with self._state.lock:
            self._state.requests.append(body)
            self._state.headers.append(headers)
            self._state.in_flight += 1
            self._state.max_in_flight = max(self._state.max_in_flight, self._state.in_flight)
            if fmt is not None and fmt not in self.response_formats:
                return Reply.text("", status=400, error_message=_UNSUPPORTED.format(fmt))
            if self._state.replies:
                return self._state.replies.popleft()
        return self.responder(body) if self.responder is not None else None

    def _done(self) -> None:
        with self._state.lock:
            self._state.in_flight -= 1

    def _wait(self, seconds: float) -> None:
        self._state.stopping.wait(seconds)


_UNSUPPORTED = "response_format type {!r} is not supported by this server"


def _error_body(message: str, status: int, param: str | None = None) -> dict[str, Any]:
    kind = "rate_limit_error" if status == 429 else "invalid_request_error"
    if status >= 500:
        kind = "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def _logprobs_body(tokens: list[ScriptedToken], top_n: int) -> dict[str, Any]:
    content = [
        {
            "token": token,
            "logprob": logprob,
            "bytes": list(token.encode()),
            "top_logprobs": [
                {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top[:top_n]
            ],
        }
        for token, logprob, top in tokens
    ]
    return {"content": content, "refusal": None}


def completion_body(server: FakeLLMServer, request: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """An OpenAI-shaped `chat.completion` object for `reply` to `request`."""
    words = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))
    prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else words
    completion_tokens = reply.completion_tokens
    if completion_tokens is None:
        completion_tokens = max(1, len(reply.content.split()))
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": reply.content, "refusal": None},
        "finish_reason": reply.finish_reason,
        "logprobs": None,
    }
    if request.get("logprobs") and reply.logprobs is not None:
        choice["logprobs"] = _logprobs_body(reply.logprobs, int(request.get("top_logprobs") or 0))
    return {
        "id": f"chatcmpl-fake-{len(server.requests)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", server.model),
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _make_handler(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout); nothing to answer

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {server.api_key}":
                return True
            self._send(401, _error_body("Incorrect API key provided.", 401))
            return False

        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/v1/models":
                self._send(404, _error_body(f"Unknown path {self.path}", 404))
                return
            if self._authorized():
                model = {"id": server.model, "object": "model", "created": 0, "owned_by": "tests"}
                self._send(200, {"object": "list", "data": [model]})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, _error_body(f"Unknown path {self.path}", 404))
                return
            if not self._authorized():
                return
            body = json.loads(raw)
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = server._next_reply(body, headers)
            try:
                self._answer(body, reply)
            finally:
                server._done()

        def _answer(self, body: dict[str, Any], reply: Reply | None) -> None:
            if reply is None:
                self._send(400, _error_body("FakeLLMServer: no scripted reply left", 400))
                return
            if reply.delay_s:
                server._wait(reply.delay_s)
            if reply.status != 200:
                error = _error_body(reply.error_message, reply.status)
                self._send(reply.status, error, reply.headers)
                return
            self._send(200, completion_body(server, body, reply), reply.headers)

    return Handler
