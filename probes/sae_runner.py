"""Model + SAE as a feature source: texts in, the SAE's sparse feature activations per token out.

`SAEFeatureSource` speaks the same `FeatureSource` interface as planted features, so the
agent, scorers and benchmarks can use either. Texts are tokenized and windowed exactly
as `ActivationReader` does (it does the batching: one forward per group of rows, the
model stopped right after the hookpoint), and each row's valid tokens go through
`sae.encode_sparse`. The result equals running the model, then `sae.encode`, by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import overload

import torch

from errors import UserError
from probes.activations import FeatureActivations, TokenSpan
from probes.model import SubjectModel
from probes.reader import ActivationReader
from probes.tokenization import Overflow
from sae.base import SparseAutoencoder

# Pre-activation elements encoded at once (64 MiB in float32), whatever d_sae is.
CHUNK_ELEMENTS = 1 << 24


class FeatureIndexError(UserError):
    """A feature index the SAE does not have; the message gives the valid range."""


@dataclass
class _Entries:
    """Non-zero codes as COO entries: text index, token position in that text, feature,
    value; sorted by (text, token, feature)."""

    text_N: torch.Tensor
    token_pos_N: torch.Tensor
    feature_N: torch.Tensor
    value_N: torch.Tensor

    def per_text(self, n_texts: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(token_pos_N, feature_N, value_N) of each text."""
        counts = torch.bincount(self.text_N, minlength=n_texts).tolist()
        return list(
            zip(
                self.token_pos_N.split(counts),
                self.feature_N.split(counts),
                self.value_N.split(counts),
                strict=True,
            )
        )


class IndexNames(Sequence[str]):
    """The names "0", "1", ... "n-1" without building a list of a million strings."""

    def __init__(self, n: int) -> None:
        self._n = n

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [str(i) for i in range(self._n)[index]]
        return str(range(self._n)[index])


@dataclass
class SAEFeatureSource:
    """Feature activations of `sae` reading `hookpoint` of `subject`.

    Feature i is named str(i); `feature_names` is a lazy sequence, free for any d_sae.
    """

    subject: SubjectModel
    sae: SparseAutoencoder
    hookpoint: str
    context_length: int = 1024
    batch_size: int = 32
    overflow: Overflow = "window"
    window_overlap: int = 0
    reader: ActivationReader = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.sae.d_in != self.subject.d_model:
            raise ValueError(
                f"the SAE reads {self.sae.d_in}-wide activations but {self.subject.name} has "
                f"d_model={self.subject.d_model}; use an SAE trained on this model"
            )
        self.reader = ActivationReader(
            self.subject,
            [self.hookpoint],
            context_length=self.context_length,
            overflow=self.overflow,
            window_overlap=self.window_overlap,
            batch_size=self.batch_size,
        )

    # -- names -----------------------------------------------------------------------

    @property
    def n_features(self) -> int:
        return self.sae.d_sae

    @property
    def feature_names(self) -> Sequence[str]:
        return IndexNames(self.sae.d_sae)

    def feature_index(self, name: str) -> int:
        """The index of feature `name` ("12" -> 12); FeatureIndexError when unknown."""
        if not (name.isascii() and name.isdigit()) or (len(name) > 1 and name[0] == "0"):
            raise FeatureIndexError(f"{name!r} is not a feature of this SAE: {self._range()}")
        index = int(name)
        self.check_features([index])
        return index

    def check_features(self, features: Sequence[int]) -> None:
        bad = [f for f in features if not 0 <= f < self.sae.d_sae]
        if bad:
            shown = ", ".join(str(f) for f in bad[:5])
            raise FeatureIndexError(f"unknown feature index {shown}: {self._range()}")

    def _range(self) -> str:
        return f"this SAE has {self.sae.d_sae} features, valid indices 0..{self.sae.d_sae - 1}"

    # -- activations -----------------------------------------------------------------

    def activations(self, texts: Sequence[str]) -> list[FeatureActivations]:
        """Per text: its tokens and its non-zero (token, feature, value) entries, sorted
        by token then feature; values float32 on the CPU."""
        spans, entries = self._entries(texts)
        return [
            # clones: a text kept alone must not hold on to the whole batch's storage
            FeatureActivations(text, tokens, pos_N.clone(), feat_N.clone(), val_N.clone())
            for text, tokens, (pos_N, feat_N, val_N) in zip(
                texts, spans, entries.per_text(len(texts)), strict=True
            )
        ]

    def dense(self, texts: Sequence[str], features: Sequence[int]) -> list[torch.Tensor]:
        """Per text, the chosen features' activations at every token: [T, len(features)],
        float32 on the CPU. Features may repeat; columns follow the order of `features`."""
        features = [int(f) for f in features]
        self.check_features(features)
        unique, inverse = torch.unique(
            torch.tensor(features, dtype=torch.long), return_inverse=True
        )
        column_F = torch.full((self.sae.d_sae,), -1, dtype=torch.long)
        column_F[unique] = torch.arange(len(unique))
        spans, entries = self._entries(texts)
        out = []
        for tokens, (pos_N, feat_N, val_N) in zip(spans, entries.per_text(len(texts)), strict=True):
            acts_TU = torch.zeros(len(tokens), len(unique), dtype=torch.float32)
            col_N = column_F[feat_N]
            keep = col_N >= 0
            acts_TU[pos_N[keep], col_N[keep]] = val_N[keep]
            out.append(acts_TU[:, inverse])
        return out

    # -- plumbing --------------------------------------------------------------------

    @torch.inference_mode()
    def _entries(self, texts: Sequence[str]) -> tuple[list[list[TokenSpan]], _Entries]:
        """Token spans per text and the non-zero codes of all their tokens."""
        batch = self.reader.tokenize(texts)
        row_text = torch.tensor(batch.row_text, dtype=torch.long)
        row_start = torch.tensor(batch.row_token_start, dtype=torch.long)
        groups: list[tuple[torch.Tensor, ...]] = []
        for rows, acts in self.reader.batches(batch):
            acts_BTD = acts[self.hookpoint]
            valid_BT = batch.valid_BT[rows, : acts_BTD.shape[1]]
            # Valid tokens of a row are consecutive: the k-th is token start + k of its text.
            rank_BT = valid_BT.cumsum(dim=1) - 1
            row_N, col_N = valid_BT.nonzero(as_tuple=True)
            text_N = row_text[rows][row_N]
            pos_N = row_start[rows][row_N] + rank_BT[row_N, col_N]
            token_E, feat_E, val_E = self._encode(acts_BTD[valid_BT.to(acts_BTD.device)])
            groups.append((text_N[token_E], pos_N[token_E], feat_E, val_E))
        if groups:
            text_E, pos_E, feat_E, val_E = (torch.cat(parts) for parts in zip(*groups, strict=True))
        else:
            text_E, pos_E, feat_E = (_empty(torch.long) for _ in range(3))
            val_E = _empty(torch.float32)
        # Sort by (text, token, feature): feature order inside a token, then two stable sorts.
        order = torch.argsort(pos_E * self.sae.d_sae + feat_E, stable=True)
        order = order[torch.argsort(text_E[order], stable=True)]
        return batch.spans, _Entries(text_E[order], pos_E[order], feat_E[order], val_E[order])

    def _encode(self, x_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(token index into x, feature, value) of every non-zero code of x; CPU tensors."""
        token_N, feature_N, value_N = encode_entries(self.sae, x_ND)
        return token_N.cpu(), feature_N.cpu(), value_N.float().cpu()


def encode_entries(
    sae: SparseAutoencoder, x_ND: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(token index into x, feature, value) of every non-zero code of x, int64/int64/the
    SAE's dtype on the SAE's device; encoded a bounded chunk of tokens at a time."""
    step = max(1, CHUNK_ELEMENTS // sae.d_sae)
    tokens, features, values = [], [], []
    for begin in range(0, x_ND.shape[0], step):
        values_NK, indices_NK = sae.encode_sparse(x_ND[begin : begin + step].to(sae.device))
        token_N, slot_N = (values_NK != 0).nonzero(as_tuple=True)
        tokens.append(token_N + begin)
        features.append(indices_NK[token_N, slot_N].long())
        values.append(values_NK[token_N, slot_N])
    if not tokens:
        empty = torch.zeros(0, dtype=torch.long, device=sae.device)
        return empty, empty, torch.zeros(0, dtype=sae.dtype, device=sae.device)
    return torch.cat(tokens), torch.cat(features), torch.cat(values)


def _empty(dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(0, dtype=dtype)
