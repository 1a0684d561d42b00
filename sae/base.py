"""The base class of every sparse dictionary and its configuration.

An SAE maps activations x [..., d_in] to feature activations f [..., d_sae] and back:

    x    = norm(x)                            (only with normalize_activations, per row)
    pre  = (x - b_dec if apply_b_dec_to_input else x) @ W_enc + b_enc
    pre *= ||W_dec[i]||                       (only with rescale_acts_by_decoder_norm)
    f    = activate(pre)                      (one rule per architecture)
    x^   = (f / ||W_dec[i]|| if rescaled) @ W_dec + b_dec
    x^   = norm^-1(x^)                        (only with normalize_activations)

Run-time normalisation is SAELens' (sae_lens/saes/sae.py, _setup_activation_normalization):
"constant_norm_rescale" scales each row to norm sqrt(d_in); "layer_norm" centres it and
divides by its standard deviation (+1e-5). Undoing it needs the row, so such SAEs
reconstruct with `reconstruct(x)` (or `sae(x)`), and `decode` alone refuses.

Weights follow SAELens' names and shapes: W_enc [d_in, d_sae], W_dec [d_sae, d_out],
b_enc [d_sae], b_dec [d_out], where d_out = d_in except for transcoders, which read one
hookpoint (`hookpoint`) and write another (`output_hookpoint`; see
sae/architectures/transcoder.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from errors import UserError


class SAEError(UserError):
    """A dictionary file or configuration is unusable; the message says how to fix it."""


class SparseCodes(NamedTuple):
    """Feature activations of each input row as (values, indices), both [..., K].

    K is fixed for TopK-style dictionaries and the row-wise maximum of active features
    for the others; unused slots hold value 0 (they contribute nothing when decoded).
    """

    values: torch.Tensor
    indices: torch.Tensor


class SAEConfig(BaseModel):
    """Everything needed to rebuild an SAE besides its tensors. Stored as JSON."""

    model_config = ConfigDict(extra="forbid")

    architecture: str
    d_in: int = Field(gt=0)
    d_sae: int = Field(gt=0)
    d_out: int | None = Field(default=None, gt=0)  # transcoders; None: d_in
    k: int | None = Field(default=None, gt=0)  # topk, batchtopk, matryoshka
    matryoshka_widths: list[int] | None = None  # nested prefix sizes; last == d_sae
    apply_b_dec_to_input: bool = True
    rescale_acts_by_decoder_norm: bool = False
    normalize_activations: Literal["none", "layer_norm", "constant_norm_rescale"] = "none"
    hookpoint: str | None = None  # glossator's name, e.g. "layers.6"; transcoders: the input
    output_hookpoint: str | None = None  # transcoders: where the decoder writes
    model_name: str | None = None
    dtype: str = "float32"
    metadata: dict[str, Any] = Field(default_factory=dict)  # provenance, training stats


class SparseAutoencoder(nn.Module, ABC):
    """Shared parameters, encode/decode plumbing and sparse decoding.

    Subclasses set `architecture`, implement `activate`, and may add tensors in
    `__init__` (declared in `extra_tensors` so that formats know what to read).
    """

    architecture: ClassVar[str]
    extra_tensors: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.validate_config(cfg)
        self.cfg = cfg
        self.W_enc = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(torch.zeros(cfg.d_sae, self.d_out))
        self.b_dec = nn.Parameter(torch.zeros(self.d_out))

    @classmethod
    def validate_config(cls, cfg: SAEConfig) -> None:
        """Raise SAEError when `cfg` lacks what this architecture needs."""
        if cfg.architecture != cls.architecture:
            raise SAEError(f"config is for {cfg.architecture!r}, not {cls.architecture!r}")
        if cfg.d_out not in (None, cfg.d_in) and cfg.apply_b_dec_to_input:
            raise SAEError(
                f"d_out={cfg.d_out} differs from d_in={cfg.d_in}, so b_dec cannot be "
                "subtracted from the input; set apply_b_dec_to_input false"
            )

    # -- shapes and devices -------------------------------------------------------------

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_out(self) -> int:
        """Width of the reconstruction: d_in, or a transcoder's output width."""
        return self.cfg.d_out or self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every parameter and buffer by its on-disk name."""
        return {**dict(self.named_parameters()), **dict(self.named_buffers())}

    # -- encoding ------------------------------------------------------------------------

    def _check_input(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.d_in:
            raise SAEError(
                f"input width {x.shape[-1]} does not match the SAE's d_in={self.d_in}; "
                "read activations from the hookpoint this SAE was trained on"
            )

    def _normalized(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """(x normalised as the SAE was trained to read it, the inverse for its output)."""
        how = self.cfg.normalize_activations
        if how == "constant_norm_rescale":
            coeff = self.d_in**0.5 / x.norm(dim=-1, keepdim=True)
            return x * coeff, lambda out: out / coeff
        if how == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            std = (x - mu).std(dim=-1, keepdim=True)
            return (x - mu) / (std + 1e-5), lambda out: out * std + mu  # SAELens: no eps out
        return x, lambda out: out

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """x as the encoder's product reads it: normalised, less b_dec when so configured."""
        self._check_input(x)
        x = self._normalized(x.to(self.dtype))[0]
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations [..., d_sae] (the input to `activate`)."""
        # One fused product and bias add: 1.4x faster than x @ W_enc + b_enc on a CPU.
        pre = F.linear(self.encoder_input(x), self.W_enc.t(), self.b_enc)
        if self.cfg.rescale_acts_by_decoder_norm:
            pre = pre * self.W_dec.norm(dim=-1)
        return pre

    @abstractmethod
    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Dense feature activations from pre-activations (same shape)."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense feature activations [..., d_sae]."""
        return self.activate(self.pre_acts(x))

    def encode_sparse(self, x: torch.Tensor) -> SparseCodes:
        """Feature activations as (values, indices) [..., K].

        This generic path goes through the dense codes; TopK-style subclasses override
        it so that no dense [tokens, d_sae] code tensor is ever built.
        """
        return dense_to_sparse(self.encode(x))

    # -- decoding ------------------------------------------------------------------------

    def decode(self, codes: torch.Tensor | SparseCodes) -> torch.Tensor:
        """Reconstruction [..., d_out] from dense codes [..., d_sae] or SparseCodes."""
        why = self.decode_needs_input()
        if why is not None:
            raise SAEError(
                f"this SAE {why}, so its output depends on the input: use reconstruct(x)"
            )
        return self._decode(codes)

    def decode_needs_input(self) -> str | None:
        """Why the output cannot be computed from the codes alone, or None when it can."""
        how = self.cfg.normalize_activations
        return None if how == "none" else f"normalises each input at run time ({how})"

    def reconstruct(self, x: torch.Tensor) -> tuple[SparseCodes, torch.Tensor]:
        """(codes of x, the output for x [..., d_out]): the reconstruction of x, with the
        run-time normalisation undone; a transcoder's prediction of its output side."""
        codes = self.encode_sparse(x)
        return codes, self._finish(x.to(self.dtype), self._decode(codes))

    def _finish(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The output from the decoded codes and the input: undo the normalisation."""
        return self._normalized(x)[1](out)

    def _decode(self, codes: torch.Tensor | SparseCodes) -> torch.Tensor:
        if isinstance(codes, SparseCodes):
            return self._decode_sparse(codes)
        dense: torch.Tensor = codes
        if dense.shape[-1] != self.d_sae:
            raise SAEError(f"codes have width {dense.shape[-1]}, the SAE has d_sae={self.d_sae}")
        if self.cfg.rescale_acts_by_decoder_norm:
            dense = dense / self.W_dec.norm(dim=-1)
        return dense.to(self.dtype) @ self.W_dec + self.b_dec

    def _decode_sparse(self, codes: SparseCodes) -> torch.Tensor:
        values, indices = codes
        if self.cfg.rescale_acts_by_decoder_norm:
            values = values / self.W_dec.norm(dim=-1)[indices]
        lead = values.shape[:-1]
        k = values.shape[-1]
        # Sum of the chosen decoder rows weighted by their activations, without ever
        # forming the dense codes: one gather-and-add per row.
        out = F.embedding_bag(
            indices.reshape(-1, k),
            self.W_dec,
            per_sample_weights=values.reshape(-1, k).to(self.dtype),
            mode="sum",
        )
        return out.reshape(*lead, self.d_out) + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of x."""
        return self.reconstruct(x)[1]

    # -- training helpers ----------------------------------------------------------------

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """Random unit-norm decoder rows, encoder = decoder transposed, zero biases.

        Tied initialisation as in Gao et al. 2024 ("Scaling and evaluating sparse
        autoencoders", sec. A.1) and Conerly et al. 2024.
        """
        generator = torch.Generator().manual_seed(seed)
        w_dec = torch.randn(self.d_sae, self.d_in, generator=generator)
        w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True)
        self.W_dec.copy_(w_dec)
        self.W_enc.copy_(w_dec.T)
        self.b_enc.zero_()
        self.b_dec.zero_()

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Scale decoder rows to unit norm (the decoder-norm constraint)."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))


def dense_to_sparse(codes: torch.Tensor) -> SparseCodes:
    """(values, indices) holding every non-zero of dense codes [..., d_sae]."""
    k = max(int((codes != 0).sum(dim=-1).max()) if codes.numel() else 0, 1)
    _, indices = codes.abs().topk(k, dim=-1)
    return SparseCodes(codes.gather(-1, indices), indices)
