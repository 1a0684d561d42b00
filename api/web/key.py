"""The UI's API key, kept where no script can read it: an HttpOnly, SameSite=Strict cookie
(Secure over https) that the server sets when the user saves a key (POST /ui/key) and
clears when they forget it (DELETE /ui/key).

The UI's own requests carry the header `X-Glossator-UI: 1` and no Authorization;
`UiKeyCookie` turns the cookie into the Authorization header for those requests only. A
page on another site can neither send the cookie (SameSite=Strict) nor that header (a
custom header needs a CORS preflight, which this server never grants), so the cookie
alone still cannot start a run or spend anything for someone else.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from api.web.common import KEY_COOKIE

router = APIRouter(include_in_schema=False)

UI_HEADER = "x-glossator-ui"
KEY_MAX_AGE_S = 365 * 24 * 3600


class SavedKey(BaseModel):
    key: str = Field(min_length=1, max_length=256)


class KeyState(BaseModel):
    saved: bool
    name: str | None = None


def _from_the_ui(request: Request) -> None:
    """403 unless the UI's own script sent this (see the module's docstring)."""
    if request.headers.get(UI_HEADER) != "1":
        raise HTTPException(403, f"only the web UI sets its key (it sends {UI_HEADER}: 1)")


@router.post("/ui/key", response_model=KeyState)
def save_key(body: SavedKey, request: Request, response: Response) -> KeyState:
    """Check the key, then keep it in the HttpOnly cookie; 401 for a key the server refuses."""
    from runtime.apikeys import ApiKeyStore, ApiKeyStoreError, InvalidApiKey

    _from_the_ui(request)
    token = body.key.strip()
    try:
        info = ApiKeyStore(request.app.state.redis).verify(token)
    except InvalidApiKey as error:
        raise HTTPException(401, str(error)) from error
    except ApiKeyStoreError as error:
        raise HTTPException(503, str(error)) from error
    response.set_cookie(
        KEY_COOKIE,
        token,
        max_age=KEY_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return KeyState(saved=True, name=info.name)


@router.delete("/ui/key", response_model=KeyState)
def forget_key(request: Request, response: Response) -> KeyState:
    _from_the_ui(request)
    response.delete_cookie(
        KEY_COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return KeyState(saved=False)


class UiKeyCookie:
    """For the UI's own requests (X-Glossator-UI: 1) with no key header: the key cookie
    as `Authorization: Bearer <key>`, so the API's usual key checks apply."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            token = _cookie(headers.get("cookie", ""))
            keyless = "authorization" not in headers and "x-api-key" not in headers
            if token and keyless and headers.get(UI_HEADER) == "1":
                bearer = (b"authorization", b"Bearer " + token.encode("latin-1"))
                scope = {**scope, "headers": [*scope["headers"], bearer]}
        await self.app(scope, receive, send)


def _cookie(header: str) -> str:
    """The key cookie's value in a Cookie header, "" when absent (or not plain ASCII)."""
    value = cookie_parser(header).get(KEY_COOKIE, "").strip()
    return value if value.isascii() and value.isprintable() else ""
