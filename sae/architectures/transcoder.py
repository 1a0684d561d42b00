"""Transcoders: dictionaries that read one hookpoint and predict another.

A transcoder (Dunefsky et al. 2024, "Transcoders Find Interpretable LLM Feature
Circuits") encodes the MLP's input (`cfg.hookpoint`, e.g. "layers.6.mlp_in") and decodes
to the MLP's output (`cfg.output_hookpoint`, "layers.6.mlp"): W_dec [d_sae, d_out],
b_dec [d_out], and b_dec is never subtracted from the input. A skip-transcoder (Paulo et
al. 2025, "Transcoders Beat Sparse Autoencoders for Interpretability") adds a linear
path x @ W_skip.T, W_skip [d_out, d_in], from the raw input.

As in SAELens' transcoder.py, a run-time input normalisation is applied on the way in
and not undone on the way out (the output lives in another space). Features, and so
evidence and explanations, belong to the input side.

    transcoder / skip_transcoder                  ReLU              SAELens
    jumprelu_transcoder / jumprelu_skip_transcoder JumpReLU          SAELens (GemmaScope)
    topk_transcoder / topk_skip_transcoder        TopK              sparsify transcode
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from sae.architectures.jumprelu import JumpReLUSAE
from sae.architectures.standard import StandardSAE
from sae.architectures.topk import TopKSAE
from sae.base import SAEConfig, SparseAutoencoder


class _Transcoding(SparseAutoencoder):
    """The output is the decoded codes as they are (no normalisation undone)."""

    def decode_needs_input(self) -> str | None:
        return None

    def _finish(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out


class _Skipping(_Transcoding):
    """Adds the skip path x @ W_skip.T, which needs the input."""

    extra_tensors: ClassVar[tuple[str, ...]] = ("W_skip",)

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.W_skip = nn.Parameter(torch.zeros(self.d_out, cfg.d_in))

    def decode_needs_input(self) -> str | None:
        return "adds a skip connection from its input (W_skip)"

    def _finish(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out + x @ self.W_skip.T


class Transcoder(_Transcoding, StandardSAE):
    architecture = "transcoder"


class SkipTranscoder(_Skipping, StandardSAE):
    architecture = "skip_transcoder"


class JumpReLUTranscoder(_Transcoding, JumpReLUSAE):
    architecture = "jumprelu_transcoder"


class JumpReLUSkipTranscoder(_Skipping, JumpReLUSAE):
    architecture = "jumprelu_skip_transcoder"
    extra_tensors = ("threshold", "W_skip")


class TopKTranscoder(_Transcoding, TopKSAE):
    architecture = "topk_transcoder"


class TopKSkipTranscoder(_Skipping, TopKSAE):
    architecture = "topk_skip_transcoder"


TRANSCODERS = (
    Transcoder,
    SkipTranscoder,
    JumpReLUTranscoder,
    JumpReLUSkipTranscoder,
    TopKTranscoder,
    TopKSkipTranscoder,
)
