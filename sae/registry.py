"""Architecture name -> class. Each architecture module registers itself on import."""

from __future__ import annotations

from typing import TypeVar

from sae.base import SAEConfig, SAEError, SparseAutoencoder

_ARCHITECTURES: dict[str, type[SparseAutoencoder]] = {}
T = TypeVar("T", bound=type[SparseAutoencoder])


def register(cls: T) -> T:
    """Class decorator: make `cls` buildable by its `architecture` name."""
    _ARCHITECTURES[cls.architecture] = cls
    return cls


def architectures() -> dict[str, type[SparseAutoencoder]]:
    import sae.architectures  # noqa: F401  (registers every architecture)

    return dict(_ARCHITECTURES)


def build_sae(cfg: SAEConfig) -> SparseAutoencoder:
    """A zero-initialised SAE of the configured architecture."""
    known = architectures()
    if cfg.architecture not in known:
        raise SAEError(
            f"unknown SAE architecture {cfg.architecture!r}; known: {', '.join(sorted(known))}"
        )
    return known[cfg.architecture](cfg)
