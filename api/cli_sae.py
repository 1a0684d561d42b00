"""`glossator sae ...`: train and evaluate sparse dictionaries."""

from __future__ import annotations

import typer

sae_app = typer.Typer(help="Train and evaluate sparse dictionaries.")
