"""The web UI: server-rendered pages (Jinja2, api/web/templates) over the same data as the
JSON API, with a little vanilla JavaScript (api/web/static) for live search, token heat,
streamed chat, live runs and keyboard navigation. Nothing is fetched from elsewhere.

A page shares its URL with the JSON resource it shows: a browser navigating (Accept:
text/html) to /features/{feature}, /runs/{run_id}, /bench or /bench/{run_id} gets the
page, every other client the JSON (`PageNegotiation`, which also sends `Vary: Accept`).
The pages themselves live under /ui/... as well, and / is the feature browser.

Reads follow the API's rule: open unless settings.read_requires_key, and then a page
takes the key from the `glossator_key` cookie the server sets (HttpOnly) when the user
saves a key. The UI's scripts never see the key: their requests carry a header that no
other site can send, and only with it does the cookie stand for the Authorization header
(api/web/key.py), so a cookie alone can never start a run.
"""

from __future__ import annotations

import re
from typing import Literal, cast, get_args

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.server_features import MAX_PAGE, SortKey, list_features
from api.services import Services
from api.web.common import PageError, failed_page, page_services, render
from api.web.views import WEB

router = APIRouter(include_in_schema=False)

PAGE_PATHS = re.compile(r"^/(?:features/[^/]+|runs/[^/]+|bench|bench/[^/]+)/?$")
SHOWN: dict[str, dict[str, bool]] = {
    "all": {},
    "explained": {"explained": True},
    "unexplained": {"explained": False},
    "fired": {"fired": True},
    "silent": {"fired": False},
}


def add_web(app: FastAPI) -> None:
    """Mount the UI on `app`: /static, the pages, and the HTML-or-JSON negotiation."""
    from api.web import bench, feature, key, runs

    app.mount("/static", StaticFiles(directory=WEB / "static"), name="static")
    for pages in (router, feature.router, runs.router, bench.router, key.router):
        app.include_router(pages)
    app.add_middleware(PageNegotiation)
    app.add_middleware(key.UiKeyCookie)


class PageNegotiation:
    """Send a browser's page navigations to the /ui/... page of the same path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        page = scope["type"] == "http" and scope["method"] in ("GET", "HEAD")
        if not (page and PAGE_PATHS.match(path)):
            await self.app(scope, receive, send)
            return
        if wants_html(dict(scope["headers"]).get(b"accept", b"").decode("latin-1")):
            raw = scope.get("raw_path") or path.encode()
            scope = {**scope, "path": "/ui" + path, "raw_path": b"/ui" + raw}

        async def vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"vary", b"Accept")]
            await send(message)

        await self.app(scope, receive, vary)


def wants_html(accept: str) -> bool:
    """Whether an Accept header asks for HTML before JSON (a browser's navigation)."""
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if "text/html" not in kinds:
        return False
    return "application/json" not in kinds or kinds.index("text/html") < kinds.index(
        "application/json"
    )


# -- the feature browser ---------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def browser_page(
    request: Request,
    q: str = "",
    show: str = "all",
    sort: str = "feature",
    order: str = "asc",
    offset: int = 0,
    limit: int = 50,
) -> HTMLResponse:
    """Features in a sortable, searchable, paginated table. Unknown parameter values fall
    back to the defaults, so a hand-edited URL still shows a page."""
    show = show if show in SHOWN else "all"
    sort = sort if sort in get_args(SortKey) else "feature"
    order = "desc" if order == "desc" else "asc"
    offset, limit = max(offset, 0), min(max(limit, 1), MAX_PAGE)
    query = " ".join(q.split())[:200]
    try:
        svc = page_services(request)
        listed = list_features(
            request,
            svc,
            offset=offset,
            limit=limit,
            q=query or None,
            sort=cast(SortKey, sort),
            order=cast(Literal["asc", "desc"], order),
            **SHOWN[show],
        )
    except (PageError, HTTPException) as error:
        return failed_page(request, error)
    params = {"q": query, "show": show, "sort": sort, "order": order, "limit": limit}
    return render(
        request,
        "browser.html",
        page=listed,
        params=params,
        number=_as_feature(query, svc),
    )


def _as_feature(query: str, svc: Services) -> int | None:
    """The feature a search names by index or planted id, to offer a direct link."""
    try:
        return svc.feature(query) if query else None
    except HTTPException:
        return None
