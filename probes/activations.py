"""The one interface every feature source speaks: texts in, per-token sparse activations out.

Planted features (ground truth), and later model+SAE runners, both return
`FeatureActivations`, so the agent, scorers and benchmarks can use either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class TokenSpan:
    """One token of a text: its string and its character span [start, end) in that text."""

    text: str
    start: int
    end: int


@dataclass
class FeatureActivations:
    """Sparse (COO) feature activations of one text.

    Entry n says: token `token_pos_N[n]` activates feature `feature_N[n]` with `value_N[n]`.
    Features are integer indices into the source's `feature_names`.
    """

    text: str
    tokens: list[TokenSpan]
    token_pos_N: torch.Tensor
    feature_N: torch.Tensor
    value_N: torch.Tensor

    def __post_init__(self) -> None:
        n = self.token_pos_N.numel()
        if self.feature_N.numel() != n or self.value_N.numel() != n:
            raise ValueError("token_pos_N, feature_N and value_N must have the same length")

    def dense(self, features: Sequence[int]) -> torch.Tensor:
        """Activations of the chosen features for every token: [T, len(features)]."""
        out_TF = torch.zeros(len(self.tokens), len(features), dtype=torch.float32)
        columns: dict[int, list[int]] = {}
        for i, f in enumerate(features):  # a feature may be asked for twice
            columns.setdefault(f, []).append(i)
        for pos, feat, val in zip(
            self.token_pos_N.tolist(), self.feature_N.tolist(), self.value_N.tolist(), strict=True
        ):
            for column in columns.get(feat, ()):
                out_TF[pos, column] = val
        return out_TF

    def by_token(self) -> list[dict[int, float]]:
        """For each token, {feature index: activation} of its non-zero features."""
        rows: list[dict[int, float]] = [{} for _ in self.tokens]
        for pos, feat, val in zip(
            self.token_pos_N.tolist(), self.feature_N.tolist(), self.value_N.tolist(), strict=True
        ):
            rows[pos][feat] = val
        return rows


class FeatureSource(Protocol):
    """Anything that turns texts into per-token feature activations."""

    @property
    def feature_names(self) -> Sequence[str]: ...

    def activations(self, texts: Sequence[str]) -> list[FeatureActivations]: ...
