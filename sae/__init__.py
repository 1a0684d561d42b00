"""Sparse dictionaries: architectures, on-disk formats, training, quality metrics.

from sae import load_sae
sae = load_sae("path/to/folder")
codes = sae.encode_sparse(acts_BTD)      # (values, indices)
recon = sae.decode(codes)
"""

from sae.base import SAEConfig, SAEError, SparseAutoencoder, SparseCodes
from sae.loading import load_sae, save_sae
from sae.registry import build_sae

__all__ = [
    "SAEConfig",
    "SAEError",
    "SparseAutoencoder",
    "SparseCodes",
    "build_sae",
    "load_sae",
    "save_sae",
]
