"""The benchmark pages: the runs, and one run's report (mean score and 95% interval per
explainer and scorer, paired differences against the agent, cost, failures) with the
report's plots, rendered by evals.report into the run's report folder, and the detection
recall by activation quantile per explainer as an inline SVG chart with its table."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from api.services import Services
from api.web.common import PageError, failed_page, page_services, render

router = APIRouter(include_in_schema=False)

LISTED = 50  # the bench page lists this many of the newest runs
PLOTS = ("scores.png", "density.png")
_rendering = threading.Lock()  # one report render at a time (matplotlib is not re-entrant)


@router.get("/ui/bench", response_class=HTMLResponse)
def bench_list_page(request: Request) -> HTMLResponse:
    from api.server_bench import _view
    from evals.results import list_runs

    try:
        page_services(request)
        client = request.app.state.redis
        runs = list_runs(client)
        views = [_view(client, run_id) for run_id in reversed(runs[-LISTED:])]
    except (PageError, HTTPException) as error:
        return failed_page(request, error)
    return render(request, "bench_list.html", views=views, total=len(runs))


@router.get("/ui/bench/{run_id}", response_class=HTMLResponse)
def bench_page(run_id: str, request: Request) -> HTMLResponse:
    from api.server_bench import _view

    try:
        page_services(request)
        view = _view(request.app.state.redis, run_id)
    except (PageError, HTTPException) as error:
        return failed_page(request, error)
    summary = view.summary
    return render(
        request,
        "bench.html",
        view=view,
        summary=summary,
        paired=[(e, cells) for e, cells in summary.paired.items() if cells],
        scored=any(c.n for cells in summary.cells.values() for c in cells.values()),
        recall=recall_chart(summary.recall_by_quantile),
    )


@router.get("/ui/bench/{run_id}/plots/{name}")
async def bench_plot(run_id: str, name: str, request: Request) -> Response:
    """One of the report's plots; rendered when missing or older than the results."""
    if name not in PLOTS:
        return Response("no such plot: scores.png or density.png", status_code=404)
    try:
        svc = page_services(request)
        path = await asyncio.to_thread(plot_file, request.app.state, svc, run_id, name)
    except (PageError, HTTPException) as error:
        return failed_page(request, error)
    if path is None:
        return Response("nothing scored yet, so no plot", status_code=404)
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-cache"})


def plot_file(state: Any, svc: Services, run_id: str, name: str) -> Path | None:
    """The plot's file in the run's report folder (runtime.bench.bench_dir), written
    with evals.report.write_report, like `glossator bench`, when the results changed
    since it was last written; None when nothing is scored yet."""
    from evals.report import write_report
    from evals.results import BenchResults
    from runtime.bench import bench_dir

    results = BenchResults(state.redis, run_id)
    config = results.config() if len(run_id) <= 200 else None
    if config is None:
        raise HTTPException(404, f"no benchmark run {run_id!r}")
    scores, explanations, failures = results.scores(), results.explanations(), results.failures()
    if not any(s.score is not None for s in scores):
        return None
    folder = bench_dir(state.settings, run_id)
    stamp = f"{len(scores)}:{len(explanations)}:{len(failures)}"
    marker = folder / ".web-rendered"
    with _rendering:
        fresh = marker.exists() and marker.read_text() == stamp
        if not (fresh and (folder / name).exists()):
            store = svc.setup.deps.store
            same = store.manifest.evidence_id == config.evidence_id
            densities = {f: store.stats(f).density for f in config.features} if same else {}
            write_report(folder, config, scores, explanations, failures, densities)
            marker.write_text(stamp)
    return folder / name


# -- the recall-by-quantile chart ----------------------------------------------------------

SERIES = 6  # colours and dash patterns in style.css (.series-0 ...), then they repeat


@dataclass
class Point:
    x: float
    y: float
    quantile: str
    recall: float


@dataclass
class Curve:
    explainer: str
    series: int  # its colour and dash pattern
    points: list[Point]

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x},{p.y}" for p in self.points)


@dataclass
class RecallChart:
    """Geometry of the recall-by-quantile chart, drawn by bench.html as SVG (no script,
    no plotting library in the page); `quantiles` and `curves` are also its table."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    quantiles: list[str]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    curves: list[Curve]


def recall_chart(
    recall: dict[str, dict[str, float]], width: int = 560, height: int = 260
) -> RecallChart | None:
    """One line per explainer (floors are not in evals.plots.mean_recall): x the
    activation quantile (0 weakest), y the mean recall from 0 to 1. None without
    detection scores."""
    quantiles = sorted({q for by_q in recall.values() for q in by_q}, key=int)
    if not quantiles:
        return None
    left, right, top, bottom = 44, width - 12, 12, height - 36  # room for the axis labels
    step = (right - left) / max(len(quantiles) - 1, 1)
    xs = {q: round(left + i * step, 1) for i, q in enumerate(quantiles)}

    def y(value: float) -> float:
        return round(bottom - value * (bottom - top), 1)

    curves = [
        Curve(e, i % SERIES, [Point(xs[q], y(by_q[q]), q, by_q[q]) for q in quantiles if q in by_q])
        for i, (e, by_q) in enumerate(recall.items())
    ]
    return RecallChart(
        width, height, left, right, top, bottom, quantiles,
        x_ticks=[(xs[q], q) for q in quantiles],
        y_ticks=[(y(v), f"{v:g}") for v in (0.0, 0.25, 0.5, 0.75, 1.0)],
        curves=curves,
    )  # fmt: skip
