"""ASGI middleware every request passes before any route sees it.

`RequestBodyGuard` reads a request body itself, counting bytes as they arrive: a body over
the limit is refused with a 413 as soon as that is known (from Content-Length, or while
reading), so a huge body is never held whole. A JSON body with a lone surrogate ("\\udce9"
with no partner) is refused with a 422 naming the field: Python decodes it, but it cannot be
encoded again (UTF-8, Redis, the tokenizer), so it would fail deep inside a route.

`SecurityHeaders` sends a Content-Security-Policy, X-Frame-Options and friends on every
response (the web UI's pages most of all).
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.server_errors import ErrorBody

# A lone surrogate can only come from a \uD800-\uDFFF escape or from UTF-8-encoded
# surrogate bytes (json.loads decodes bytes with "surrogatepass"); bodies without either
# skip the second parse.
_MAY_HOLD_SURROGATES = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


class RequestBodyGuard:
    """413 for a body over `max_bytes`, 422 for a JSON body holding a lone surrogate."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Every request's body is read here, even where no header announces one (HTTP/2
        # needs none): a bodiless request's first message comes at once, empty.
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)  # not a byte of it read
            return
        try:
            body = await self._read(receive)
        except _ClientGone:
            return  # nobody to answer
        if body is None:
            await self._too_large(scope, receive, send)
            return
        problem = lone_surrogate(body)
        if problem is not None:
            await _refuse(422, problem[0], [problem[1]], scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = (
            f"the request body is larger than this server accepts ({self.max_bytes:,} bytes; "
            "GLOSSATOR_MAX_BODY_BYTES sets it): send fewer or shorter texts"
        )
        await _refuse(413, detail, None, scope, receive, send)


class _ClientGone(Exception):
    """The client went away before it had sent its whole body."""


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the body read already, then the real messages (a
    streaming response listens on them for the client's disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _refuse(
    status: int,
    detail: str,
    errors: list[dict[str, Any]] | None,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    body = ErrorBody(detail=detail, errors=errors).model_dump(exclude_none=True)
    # No "Connection: close": closing with the client still sending would reset the
    # connection, and the client might lose this answer. The server reads the unread rest
    # of a refused body and drops it (uvicorn does), holding none of it.
    await JSONResponse(body, status_code=status)(scope, receive, send)


def lone_surrogate(body: bytes) -> tuple[str, dict[str, Any]] | None:
    """(detail, error) for the first string (in document order) of a JSON `body` that
    holds a lone surrogate; None when none does, or when `body` is not JSON (the route's
    own parsing says why)."""
    if not _MAY_HOLD_SURROGATES.search(body):
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[tuple[Any, ...], Any]] = [(("body",), document)]
    while stack:  # not recursive: a deeply nested body must not exhaust the stack
        loc, value = stack.pop()
        if isinstance(value, dict):  # pushed in reverse, so the first one is found first
            for key, item in reversed(value.items()):
                stack += [((*loc, key), item), ((*loc, key), key)]  # a key is a string too
        elif isinstance(value, list):
            stack.extend(reversed([((*loc, i), item) for i, item in enumerate(value)]))
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as error:
                return _surrogate_error(loc, value, error.start)
    return None


def _surrogate_error(loc: tuple[Any, ...], text: str, at: int) -> tuple[str, dict[str, Any]]:
    safe_loc = [_escaped(part) if isinstance(part, str) else part for part in loc]
    where = ".".join(str(part) for part in safe_loc)
    escaped = _escaped(text[at])
    msg = (
        f"holds a lone surrogate ({escaped}) at character {at}: text must be valid Unicode "
        "(a surrogate escape needs its pair, e.g. \\ud83d\\ude00; or send the character "
        "itself in UTF-8)"
    )
    error = {"type": "lone_surrogate", "loc": safe_loc, "msg": msg}
    return f"invalid request: {where}: {msg}", error


def _escaped(text: str) -> str:
    """`text` with lone surrogates spelled as \\udXXX escapes, so JSON can carry it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# -- security headers ----------------------------------------------------------------------

# The web UI loads its scripts, styles, images and data from this server only. Token heat
# sets `style="--a:…"` attributes, hence style-src-attr.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# FastAPI's /docs page starts Swagger UI with an inline script (and ReDoc searches in a
# blob: worker); they show only the OpenAPI schema.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
COMMON_HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


class SecurityHeaders:
    """CSP, X-Frame-Options: DENY, X-Content-Type-Options: nosniff and Referrer-Policy on
    every HTTP response (a header a route set itself is kept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope.get("path", "").startswith(DOCS_PATHS)
        policy = (DOCS_POLICY if docs else PAGE_POLICY).encode()
        added = ((b"content-security-policy", policy), *COMMON_HEADERS)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in added if name not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
