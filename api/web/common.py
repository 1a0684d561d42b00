"""What every page shares: rendering with the service's context, the read check (the
API's rule, with the key also taken from the UI's cookie), and the error pages."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse

from api.services import NotReady, Services, loaded_services
from api.web.views import templates
from errors import GlossatorError

KEY_COOKIE = "glossator_key"  # HttpOnly, set by POST /ui/key (api/web/key.py)
pages = templates()


class PageError(GlossatorError):
    """A page that cannot be shown; rendered as error.html with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    svc: Services | None = request.app.state.services
    context.setdefault("subject", svc.setup.subject if svc is not None else None)
    context.setdefault("evidence_id", svc.setup.deps.store.manifest.evidence_id if svc else None)
    context.setdefault("reasoner", svc.setup.deps.reasoner.name if svc else None)
    context.setdefault("key_saved", bool(request.cookies.get(KEY_COOKIE, "").strip()))
    response: HTMLResponse = pages.TemplateResponse(request, name, context, status_code=status)
    return response


def page_services(request: Request) -> Services:
    """The loaded services, after the read check; PageError when the page needs a key it
    did not get, or while the service is loading or when loading failed."""
    state = request.app.state
    if state.settings.read_requires_key:
        check_read_key(request)
    try:
        return loaded_services(state)
    except NotReady as error:
        raise PageError(503, "loading" if error.loading else str(error)) from error


def check_read_key(request: Request) -> None:
    """The API's read check, with the key from the UI's cookie when no header has one."""
    from api.server_auth import require_key
    from runtime.apikeys import ApiKeyStore, ApiKeyStoreError, InvalidApiKey

    cookie = request.cookies.get(KEY_COOKIE, "").strip()
    try:
        if cookie and not request.headers.get("authorization"):
            ApiKeyStore(request.app.state.redis).verify(cookie)
        else:
            require_key(request)
    except HTTPException as error:
        why = f"reading needs an API key on this server: {error.detail}"
        status = error.status_code
        raise PageError(status, why if status == 401 else str(error.detail)) from error
    except InvalidApiKey as error:
        raise PageError(401, f"reading needs an API key on this server: {error}") from error
    except ApiKeyStoreError as error:
        raise PageError(503, str(error)) from error


def failed_page(request: Request, error: PageError | HTTPException) -> HTMLResponse:
    """The error page of `error`; the loading page (which reloads itself) while loading."""
    if isinstance(error, HTTPException):
        error = PageError(error.status_code, str(error.detail))
    if error.status == 503 and str(error) == "loading":
        return render(request, "loading.html", status=503)
    return render(request, "error.html", status=error.status, code=error.status, message=str(error))


BROWSER_DEFAULTS: dict[str, Any] = {
    "q": "",
    "show": "all",
    "sort": "feature",
    "order": "asc",
    "offset": 0,
    "limit": 50,
}


def browser_link(params: dict[str, Any], **changes: Any) -> str:
    """The feature browser's URL with some parameters changed (defaults left out)."""
    merged = {**params, **changes}
    kept = {k: v for k, v in merged.items() if v != BROWSER_DEFAULTS.get(k)}
    return "/?" + urlencode(kept) if kept else "/"


pages.env.globals["browser_link"] = browser_link
