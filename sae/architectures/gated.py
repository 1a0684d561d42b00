"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated
Sparse Autoencoders"), eq. 6 with the weight sharing of sec. 3.2:

    x_in    = x - b_dec                    (if apply_b_dec_to_input)
    pi_gate = x_in @ W_enc + b_gate        decides which features are active
    pi_mag  = x_in @ (W_enc * exp(r_mag)) + b_mag    decides how strongly
    f       = (pi_gate > 0) * ReLU(pi_mag)

Tensors are exactly SAELens' GatedSAE ones: W_enc, W_dec, b_dec, b_gate, r_mag, b_mag.
There is no b_enc (SAELens sets it to None): this class deletes the base's.
"""

from __future__ import annotations

import torch
from torch import nn

from sae.base import SAEConfig, SparseAutoencoder


class GatedSAE(SparseAutoencoder):
    architecture = "gated"
    extra_tensors = ("b_gate", "r_mag", "b_mag")

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        del self.b_enc  # b_gate and b_mag take its place
        self.b_gate = nn.Parameter(torch.zeros(cfg.d_sae))
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae))

    def _sae_in(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x = self._normalized(x.to(self.dtype))[0]
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """pi_mag [..., d_sae], the magnitudes before ReLU and gate (SAELens' hook_sae_acts_pre)."""
        return self._magnitudes(self._sae_in(x))

    def _magnitudes(self, x_in: torch.Tensor) -> torch.Tensor:
        pre = x_in @ (self.W_enc * self.r_mag.exp()) + self.b_mag
        if self.cfg.rescale_acts_by_decoder_norm:
            pre = pre * self.W_dec.norm(dim=-1)
        return pre

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The magnitude path's ReLU; the gate is applied in `encode`."""
        return pre.relu()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x_in = self._sae_in(x)
        gate = x_in @ self.W_enc + self.b_gate > 0
        return torch.where(gate, self.activate(self._magnitudes(x_in)), 0)

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """The base's tied initialisation; b_gate, r_mag, b_mag start at zero (SAELens)."""
        self.b_enc = nn.Parameter(torch.zeros_like(self.b_gate))  # the base zeroes b_enc
        super().init_weights(seed)
        del self.b_enc
        for tensor in (self.b_gate, self.r_mag, self.b_mag):
            tensor.zero_()
