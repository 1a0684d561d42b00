"""The live run view: an agent run's hypotheses with their statuses, its experiments with
token heat, and its explanation. run.js follows the run's events and re-reads this page
(the `#live` part) on each step, so the page and its updates share one template."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from api.web.common import PageError, failed_page, page_services, render

router = APIRouter(include_in_schema=False)


@router.get("/ui/runs/{run_id}", response_class=HTMLResponse)
async def run_page(run_id: str, request: Request) -> HTMLResponse:
    try:
        svc = page_services(request)
        view = await svc.runs.view(run_id)
    except (PageError, HTTPException) as error:
        return failed_page(request, error)
    state = view.state
    # Full heat is the feature's largest activation in the evidence (or in the run).
    peaks = [svc.setup.deps.store.stats(view.feature).max_act]
    if state is not None:
        peaks += [e.outcome.max_act for e in state.experiments if e.outcome is not None]
    scale = max([p for p in peaks if p > 0] or [1.0])
    return render(request, "run.html", view=view, state=state, scale=scale)
