"""TopK SAE: f = ReLU of each row's k largest pre-activations, 0 elsewhere.

Makhzani & Frey 2013 ("k-Sparse Autoencoders"); Gao et al. 2024 ("Scaling and
evaluating sparse autoencoders"). As in SAELens, top-k is taken on the raw
pre-activations and ReLU is applied to the kept values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sae.architectures.standard import encode_sparse_by_rows
from sae.base import SAEConfig, SAEError, SparseAutoencoder, SparseCodes
from sae.devices import fast_bfloat16

# Ranking in bfloat16, deciding in float32: where bfloat16 products are fast, a float32
# SAE finds each row's k + RANK_MARGIN largest pre-activations with a bfloat16 product
# (half the time of the float32 one on AVX512-BF16 cores) and picks the top k among
# them by their exact float32 values. bfloat16 rounds a pre-activation by ~0.4% of its
# largest terms, far less than the gap between ranks k and k + 8: on 300k corpus tokens
# of the default SAE, a margin of 4 gave 2 tokens another feature, a margin of 8 none.
RANK_MARGIN = 8
# The exact values are dot products with each row's own candidate weight rows, gathered
# a few rows at a time so that they stay in cache: a whole chunk's are 64 MB, and
# gathering them took 6x as long as the products (2,048 rows: 34 ms -> 9 ms).
EXACT_ROWS = 64


def check_k(cfg: SAEConfig) -> int:
    """cfg.k, after checking that 1 <= k <= d_sae."""
    if cfg.k is None:
        raise SAEError(
            f"a {cfg.architecture!r} SAE needs k (active features per token) in its config; "
            "set cfg.k, e.g. k=32"
        )
    if not 1 <= cfg.k <= cfg.d_sae:
        raise SAEError(f"k={cfg.k} must be between 1 and d_sae={cfg.d_sae}")
    return cfg.k


class TopKSAE(SparseAutoencoder):
    architecture = "topk"

    @classmethod
    def validate_config(cls, cfg: SAEConfig) -> None:
        super().validate_config(cfg)
        check_k(cfg)

    @property
    def k(self) -> int:
        return check_k(self.cfg)

    def _select(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, indices = pre.topk(self.k, dim=-1)
        return values.relu(), indices

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        values, indices = self._select(pre)
        return torch.zeros_like(pre).scatter(-1, indices, values)

    def encode_sparse(self, x: torch.Tensor) -> SparseCodes:
        """(values, indices) [..., k] straight from the top-k: no dense codes."""
        ranks_plainly = self.architecture == "topk"  # not AbsTopK's or GroupMax's ranking
        inference = not torch.is_grad_enabled()  # gradients go through the plain formula
        float32 = self.dtype == torch.float32
        if ranks_plainly and inference and float32 and fast_bfloat16(self.device):
            return encode_sparse_by_rows(self, x, self._select, self.select_ranked)
        return encode_sparse_by_rows(self, x, self._select)

    def select_ranked(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The top k of rows x [n, d_in] (values, indices; as `_select` of the float32
        pre-activations), with candidates ranked in bfloat16 (see RANK_MARGIN)."""
        weights = self._ranking_weights()
        x_in = self.encoder_input(x)
        low = torch.bfloat16
        rough = F.linear(x_in.to(low), weights.low_t, weights.low_bias)
        if weights.scale is not None:
            rough = rough * weights.scale.to(low)
        n_candidates = min(self.d_sae, self.k + RANK_MARGIN)
        candidates = rough.topk(n_candidates, dim=-1, sorted=False).indices
        exact = torch.cat(
            [
                torch.einsum("nd,ncd->nc", x_rows, weights.rows[c_rows])
                for x_rows, c_rows in zip(
                    x_in.split(EXACT_ROWS), candidates.split(EXACT_ROWS), strict=True
                )
            ]
        )
        exact = exact + self.b_enc[candidates]
        if weights.scale is not None:
            exact = exact * weights.scale[candidates]
        values, local = exact.topk(self.k, dim=-1)
        return values.relu(), candidates.gather(-1, local)

    def _ranking_weights(self) -> _RankingWeights:
        """Made once per state of the weights (an in-place update or a new tensor makes
        them again), not once per chunk: the copies cost as much as a chunk's product."""
        params = (self.W_enc, self.b_enc, self.W_dec)
        key = tuple((p.data_ptr(), p._version) for p in params)
        cached = self.__dict__.get("_ranking")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, _RankingWeights.of(self))
            self.__dict__["_ranking"] = cached
        weights: _RankingWeights = cached[1]
        return weights


@dataclass
class _RankingWeights:
    """What `select_ranked` multiplies by, made once per call, not once per chunk."""

    low_t: torch.Tensor  # W_enc in bfloat16, as F.linear's [d_sae, d_in] weight
    low_bias: torch.Tensor  # b_enc in bfloat16
    rows: torch.Tensor  # W_enc transposed and contiguous: [d_sae, d_in], float32
    scale: torch.Tensor | None  # decoder norms when pre-activations are rescaled by them

    @classmethod
    def of(cls, sae: TopKSAE) -> _RankingWeights:
        rescale = sae.cfg.rescale_acts_by_decoder_norm
        return cls(
            low_t=sae.W_enc.t().to(torch.bfloat16),
            low_bias=sae.b_enc.to(torch.bfloat16),
            rows=sae.W_enc.t().contiguous(),
            scale=sae.W_dec.norm(dim=-1) if rescale else None,
        )
