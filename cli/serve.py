"""`glossator serve`: the HTTP API (and its OpenAPI docs at /docs) under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import user_errors
from cli.explain import PlantedFlag, SpecOption
from runtime.settings import get_settings


def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    planted: PlantedFlag = False,
    spec: SpecOption = None,
) -> None:
    """Serve the API: features, activations, agent runs and chat (SSE), jobs. The model,
    SAE and evidence load in the background; GET /ready says when they have."""
    import uvicorn

    from api.server import create_app

    with user_errors():
        settings = get_settings()
        app = create_app(settings, planted=planted or spec is not None, spec=spec)
    uvicorn.run(app, host=host, port=port, log_level="info")
