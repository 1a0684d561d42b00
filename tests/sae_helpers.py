"""Small SAEs with known behaviour, shared by the SAE tests."""

from __future__ import annotations

import torch

from sae import SAEConfig, SparseAutoencoder, build_sae


def identity_sae(d_in: int) -> SparseAutoencoder:
    """ReLU SAE that reconstructs exactly: f = [relu(x), relu(-x)], x^ = f @ [I; -I]."""
    cfg = SAEConfig(architecture="standard", d_in=d_in, d_sae=2 * d_in, apply_b_dec_to_input=False)
    sae = build_sae(cfg)
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    return sae
