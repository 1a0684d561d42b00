"""`glossator worker`: serve the job queue of one subject (see jobs/worker.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import user_errors
from cli.explain import PlantedFlag, SpecOption
from runtime.settings import get_settings


def worker_command(
    planted: PlantedFlag = False,
    spec: SpecOption = None,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Agent runs at once (default: GLOSSATOR_WORKER_CONCURRENCY)."),
    ] = None,
    claim_after: Annotated[
        float | None,
        typer.Option(min=0.1, help="Seconds before a silent worker's features move on [60]."),
    ] = None,
) -> None:
    """Explain the features that `glossator explain --features` (or the HTTP API) queues
    for this model and SAE (or these planted features), many at once, until stopped
    (SIGTERM or Ctrl-C finish the running features first)."""
    from jobs.queue import CLAIM_AFTER_S  # imported here: taskiq takes ~1 s to import
    from jobs.worker import run_worker

    with user_errors():
        settings = get_settings()
        runs = concurrency or settings.worker_concurrency
        claim = claim_after or CLAIM_AFTER_S
        run_worker(settings, planted or spec is not None, spec, runs, claim)
