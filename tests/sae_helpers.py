"""Small SAEs with known behaviour, shared by the SAE tests."""

from __future__ import annotations

from typing import Any

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


def sparsify_cfg(d_in: int, d_sae: int, k: int, /, **fields: Any) -> dict[str, Any]:
    """A sparsify SAE's cfg.json (SparseCoderConfig plus d_in): TopK unless `fields` say
    otherwise."""
    cfg: dict[str, Any] = {
        "activation": "topk",
        "expansion_factor": d_sae // d_in,
        "normalize_decoder": True,
        "num_latents": 0,
        "k": k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": d_in,
    }
    cfg.update(fields)
    return cfg
