"""Architecture name -> class."""

from __future__ import annotations

from sae.architectures import ARCHITECTURES
from sae.base import SAEConfig, SAEError, SparseAutoencoder


def architectures() -> dict[str, type[SparseAutoencoder]]:
    return {cls.architecture: cls for cls in ARCHITECTURES}


def build_sae(cfg: SAEConfig) -> SparseAutoencoder:
    """A zero-initialised SAE of the configured architecture."""
    known = architectures()
    if cfg.architecture not in known:
        raise SAEError(
            f"unknown SAE architecture {cfg.architecture!r}; known: {', '.join(sorted(known))}"
        )
    return known[cfg.architecture](cfg)
