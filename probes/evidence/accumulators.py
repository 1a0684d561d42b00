"""Streaming, device-resident accumulators of feature evidence over sparse activations.

Every accumulator consumes, batch after batch, the SAE's sparse activations as COO
triples of equal length N: `context_N` (int64 global id of the context window the token
belongs to), `feature_N` (int64 feature index in [0, n_features)) and `value_N` (the
activation, > 0; entries <= 0 or NaN are ignored). Each (token, feature) pair appears at
most once. All work is vectorised on the state's device (CPU or CUDA): no Python loop
over features or tokens, and memory is O(n_features * k), never O(tokens * features).

- `StreamingTopK`: per feature, the k contexts with the highest activation (a context's
  activation is its max over its tokens), ties broken by lower context id.
- `StreamingSample`: per feature, a uniform random sample without replacement of up to k
  distinct activating contexts, independent of how the stream is split into batches.
(`FeatureStats`, in `stats`, keeps firing counts, density, sum/mean/max and a histogram.)

Contexts: a context is normally wholly inside one batch. The two selections stay exact
even when one is split across batches, because the candidates kept in the state are
merged with the batch's and reduced to one max per (feature, context) before ranking.

All three have `state_dict()` / `load_state_dict()` (saving mid-stream, loading and
continuing gives exactly the same final result) and `.to(device)`.
"""

from __future__ import annotations

from typing import Self

import torch
from torch import Tensor

# splitmix64 finaliser constants (Steele, Lea & Flood 2014), as signed int64.
_MIX_C1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX_C2 = 0x94D049BB133111EB - (1 << 64)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_MASK_63 = (1 << 63) - 1


def _shr(x_N: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 values (torch's `>>` is arithmetic)."""
    return (x_N >> bits) & ((1 << (64 - bits)) - 1)


def _mix64(x_N: Tensor) -> Tensor:
    """splitmix64's finaliser in wrapping int64 arithmetic: a bijective bit mixer."""
    x_N = x_N ^ _shr(x_N, 30)
    x_N = x_N * _MIX_C1
    x_N = x_N ^ _shr(x_N, 27)
    x_N = x_N * _MIX_C2
    return x_N ^ _shr(x_N, 31)


def pair_priority(seed: int, feature_N: Tensor, context_N: Tensor) -> Tensor:
    """A pseudo-random int64 priority in [0, 2**63) per (seed, feature, context) pair."""
    seed_mixed = int(_mix64(torch.tensor([seed & _MASK_63], dtype=torch.int64)).item())
    h_N = _mix64(feature_N * _GOLDEN + seed_mixed)
    return _mix64(h_N ^ context_N) & _MASK_63


def check_coo(context_N: Tensor, feature_N: Tensor, value_N: Tensor, n_features: int) -> None:
    if not (context_N.shape == feature_N.shape == value_N.shape) or context_N.dim() != 1:
        raise ValueError(
            "context_N, feature_N and value_N must be 1-D tensors of the same length, got "
            f"{tuple(context_N.shape)}, {tuple(feature_N.shape)}, {tuple(value_N.shape)}"
        )
    if feature_N.numel() and (int(feature_N.min()) < 0 or int(feature_N.max()) >= n_features):
        raise ValueError(f"feature indices must lie in [0, {n_features})")


def check_device(t: Tensor, device: torch.device, name: str) -> Tensor:
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the accumulator is on {device}; move one")
    return t


def _lexsort(keys: list[tuple[Tensor, bool]]) -> Tensor:
    """Permutation sorting by several keys, the first most significant (key, descending)."""
    order_N = torch.argsort(keys[-1][0], descending=keys[-1][1], stable=True)
    for key_N, descending in reversed(keys[:-1]):
        order_N = order_N[torch.argsort(key_N[order_N], descending=descending, stable=True)]
    return order_N


def _segment_rank(sorted_group_N: Tensor) -> Tensor:
    """Position of each element within its run of equal values of a sorted tensor."""
    start_N = torch.searchsorted(sorted_group_N, sorted_group_N)
    return torch.arange(sorted_group_N.numel(), device=sorted_group_N.device) - start_N


class _PerFeatureSelection:
    """Keeps, per feature, the k best (context, value) pairs under `_score` (higher first,
    then lower context id first). Subclasses define the score.

    The k slots of a feature are unordered (a newcomer takes the slot of the pair it
    evicts, so kept data never moves); `ordered()` gives rows in ranking order. With
    `width` W > 0 it also keeps, per kept pair, the feature's activation at each of the W
    token positions of that context (`acts_FKW`, float16; `pos_N` gives each entry's
    position in its context); then a context must lie wholly inside one batch.
    """

    def __init__(
        self, n_features: int, k: int, device: torch.device | str = "cpu", width: int = 0
    ) -> None:
        if n_features <= 0 or k <= 0 or width < 0:
            raise ValueError(
                f"n_features and k must be positive and width >= 0, got {n_features}, {k}, {width}"
            )
        self.n_features = n_features
        self.k = k
        self.width = width
        self.values_FK = torch.zeros(n_features, k, dtype=torch.float32, device=device)
        self.contexts_FK = torch.full((n_features, k), -1, dtype=torch.int64, device=device)
        self.acts_FKW = torch.zeros(n_features, k, width, dtype=torch.float16, device=device)
        self.floor_F = self._floors(torch.arange(n_features, device=device))

    @property
    def device(self) -> torch.device:
        return self.values_FK.device

    def _score(self, feature_N: Tensor, context_N: Tensor, value_N: Tensor) -> Tensor:
        raise NotImplementedError

    def _floors(self, rows_M: Tensor) -> Tensor:
        """Per row, the lowest score a newcomer must reach: the worst kept score when the
        row is full, else the score type's minimum."""
        contexts_MK = self.contexts_FK[rows_M]
        scores_MK = self._score(
            rows_M[:, None].expand_as(contexts_MK), contexts_MK.clamp(min=0), self.values_FK[rows_M]
        )
        worst_M = scores_MK.min(dim=1).values
        info = torch.finfo if worst_M.is_floating_point() else torch.iinfo
        lowest_M = torch.full_like(worst_M, info(worst_M.dtype).min)
        return torch.where((contexts_MK >= 0).all(dim=1), worst_M, lowest_M)

    def update(
        self,
        context_N: Tensor,
        feature_N: Tensor,
        value_N: Tensor,
        pos_N: Tensor | None = None,
    ) -> None:
        """Fold one batch of COO activations into the state."""
        check_coo(context_N, feature_N, value_N, self.n_features)
        named = [("context_N", context_N), ("feature_N", feature_N), ("value_N", value_N)]
        if self.width:
            pos_N = _check_positions(pos_N, context_N, self.width)
            named.append(("pos_N", pos_N))
        for name, t in named:
            check_device(t, self.device, name)
        fires_N = value_N > 0
        context_N, feature_N = context_N[fires_N].long(), feature_N[fires_N].long()
        value_N = value_N[fires_N].float()
        pos_N = pos_N[fires_N].long() if pos_N is not None else None
        # The worst kept score of a feature only rises, so an entry below it can never
        # enter: ranking only the rest is exact and keeps the sorts small.
        entering_N = self._score(feature_N, context_N, value_N) >= self.floor_F[feature_N]
        if not bool(entering_N.any()):
            return
        key_P, inverse_N = torch.unique(
            pair_key(feature_N[entering_N], context_N[entering_N]), return_inverse=True
        )
        value_P = torch.zeros(key_P.numel(), dtype=torch.float32, device=self.device)
        value_P.scatter_reduce_(0, inverse_N, value_N[entering_N], reduce="amax")
        feature_P, context_P = key_P >> CONTEXT_BITS, key_P & _CONTEXT_MASK
        touched_M = torch.unique(feature_P)
        slot_MK = touched_M[:, None] * self.k + torch.arange(self.k, device=self.device)
        flat_values, flat_contexts = self.values_FK.view(-1), self.contexts_FK.view(-1)
        # A pair already kept (its context split across batches) merges into its slot.
        old_context_MK = self.contexts_FK[touched_M]
        old_key_MK = pair_key(touched_M[:, None].expand_as(old_context_MK), old_context_MK)
        kept_key_S, kept_order_S = torch.sort(old_key_MK.view(-1))
        where_P, known_P = _lookup(kept_key_S, key_P)
        known_slot = slot_MK.view(-1)[kept_order_S[where_P[known_P]]]
        flat_values[known_slot] = torch.maximum(flat_values[known_slot], value_P[known_P])
        # Rank the kept pairs and the new ones together; the k best of each feature stay.
        new_P = ~known_P
        old_slot_S = slot_MK.view(-1)[old_context_MK.view(-1) >= 0]
        slot_U = torch.cat([old_slot_S, torch.full_like(key_P[new_P], -1)])
        feature_U = torch.cat([old_slot_S // self.k, feature_P[new_P]])
        context_U = torch.cat([flat_contexts[old_slot_S], context_P[new_P]])
        value_U = torch.cat([flat_values[old_slot_S], value_P[new_P]])
        order_U = _lexsort(
            [
                (feature_U, False),
                (self._score(feature_U, context_U, value_U), True),
                (context_U, False),
            ]
        )
        keep_U = torch.empty_like(order_U, dtype=torch.bool)
        keep_U[order_U] = _segment_rank(feature_U[order_U]) < self.k
        # Newcomers that made it take the free slots (empty or evicted) of their feature,
        # both taken in ascending order.
        free_MK = torch.ones_like(old_context_MK, dtype=torch.bool)
        free_MK.view(-1)[torch.searchsorted(slot_MK.view(-1), slot_U[keep_U & (slot_U >= 0)])] = (
            False
        )
        free_slot_S = slot_MK[free_MK]
        free_rank_MK = free_MK.cumsum(dim=1) - 1
        slot_table_MK = torch.full_like(slot_MK, -1)
        free_row_S = free_MK.nonzero(as_tuple=True)[0]
        slot_table_MK[free_row_S, free_rank_MK[free_MK]] = free_slot_S
        joining_U = keep_U & (slot_U < 0)
        join_feature_J = feature_U[joining_U]
        join_order_J = torch.argsort(join_feature_J, stable=True)
        sorted_feature_J = join_feature_J[join_order_J]
        slot_J = torch.empty_like(join_feature_J)
        slot_J[join_order_J] = slot_table_MK[
            torch.searchsorted(touched_M, sorted_feature_J), _segment_rank(sorted_feature_J)
        ]
        flat_values[free_slot_S] = 0.0
        flat_contexts[free_slot_S] = -1
        flat_values[slot_J] = value_U[joining_U]
        flat_contexts[slot_J] = context_U[joining_U]
        if self.width:
            assert pos_N is not None
            self._write_windows(slot_J, free_slot_S, feature_N, context_N, value_N, pos_N)
        self.floor_F[touched_M] = self._floors(touched_M)

    def _write_windows(
        self,
        slot_J: Tensor,
        freed_S: Tensor,
        feature_N: Tensor,
        context_N: Tensor,
        value_N: Tensor,
        pos_N: Tensor,
    ) -> None:
        """Zero the freed slots' windows, then write the batch's entries of every kept
        pair of the joining features into its slot."""
        flat_acts_SW = self.acts_FKW.view(-1, self.width)
        flat_acts_SW[freed_S] = 0.0
        touched_F = torch.zeros(self.n_features, dtype=torch.bool, device=self.device)
        touched_F[slot_J // self.k] = True
        mine_N = touched_F[feature_N]
        feature_N, context_N = feature_N[mine_N], context_N[mine_N]
        rows_M = torch.unique(feature_N)
        slot_MK = rows_M[:, None] * self.k + torch.arange(self.k, device=self.device)
        key_MK = pair_key(rows_M[:, None].expand_as(slot_MK), self.contexts_FK[rows_M])
        key_S, order_S = torch.sort(key_MK.view(-1))
        where_N, hit_N = _lookup(key_S, pair_key(feature_N, context_N))
        slot_N = slot_MK.view(-1)[order_S[where_N[hit_N]]]
        half_N = value_N[mine_N][hit_N].clamp(max=_FLOAT16_MAX).half()
        # One value per (slot, token): a context lies inside one batch, so plain writes.
        flat_acts_SW.view(-1)[slot_N * self.width + pos_N[mine_N][hit_N]] = half_N

    def ordered(self) -> tuple[Tensor, Tensor, Tensor]:
        """(values_FK, contexts_FK, acts_FKW) with each row in ranking order (best first;
        empty slots, context -1 and value 0, last)."""
        feature_S = torch.arange(self.n_features, device=self.device).repeat_interleave(self.k)
        context_S, value_S = self.contexts_FK.view(-1), self.values_FK.view(-1)
        score_S = self._score(feature_S, context_S.clamp(min=0), value_S)
        order_S = _lexsort(
            [
                (feature_S, False),
                ((context_S < 0).to(torch.int8), False),
                (score_S, True),
                (context_S, False),
            ]
        )
        shape = (self.n_features, self.k)
        return (
            value_S[order_S].view(shape),
            context_S[order_S].view(shape),
            self.acts_FKW.view(-1, self.width)[order_S].view(*shape, self.width)
            if self.width
            else self.acts_FKW,
        )

    def _config(self) -> dict[str, int]:
        return {"n_features": self.n_features, "k": self.k, "width": self.width}

    def state_dict(self) -> dict[str, Tensor]:
        config = {name: torch.tensor(v, dtype=torch.int64) for name, v in self._config().items()}
        return {
            **config,
            "values_FK": self.values_FK.clone(),
            "contexts_FK": self.contexts_FK.clone(),
            "acts_FKW": self.acts_FKW.clone(),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        check_config(type(self).__name__, self._config(), state)
        self.values_FK = state["values_FK"].to(self.device, torch.float32).clone()
        self.contexts_FK = state["contexts_FK"].to(self.device, torch.int64).clone()
        self.acts_FKW = state["acts_FKW"].to(self.device, torch.float16).clone()
        self.floor_F = self._floors(torch.arange(self.n_features, device=self.device))

    def to(self, device: torch.device | str) -> Self:
        self.values_FK = self.values_FK.to(device)
        self.contexts_FK = self.contexts_FK.to(device)
        self.acts_FKW = self.acts_FKW.to(device)
        self.floor_F = self.floor_F.to(device)
        return self


def check_config(owner: str, config: dict[str, int], state: dict[str, Tensor]) -> None:
    for name, expected in config.items():
        if name not in state:
            raise KeyError(f"{owner} state has no '{name}'; was it saved by {owner}?")
        if int(state[name].item()) != expected:
            raise ValueError(
                f"{owner} state has {name}={int(state[name].item())}, this one has {expected}"
            )


class StreamingTopK(_PerFeatureSelection):
    """Per feature, the k contexts with the highest (max-over-tokens) activation.

    `ordered()` rows are descending (0.0 padding) with their context ids (-1 padding
    where a feature fired in fewer than k contexts). Equal values: lower context id first.
    """

    def _score(self, feature_N: Tensor, context_N: Tensor, value_N: Tensor) -> Tensor:
        return value_N


class StreamingSample(_PerFeatureSelection):
    """Per feature, a uniform random sample without replacement of up to k distinct
    activating contexts, with their (max-over-tokens) activation.

    Each (feature, context) pair gets a priority from `pair_priority(seed, ...)` and the
    k smallest are kept, so the sample does not depend on batch order or size.
    `ordered()` rows are in priority order (a random order), padded with context -1 and
    value 0.0.
    """

    def __init__(
        self,
        n_features: int,
        k: int,
        seed: int,
        device: torch.device | str = "cpu",
        width: int = 0,
    ) -> None:
        self.seed = seed
        super().__init__(n_features, k, device, width)

    def _score(self, feature_N: Tensor, context_N: Tensor, value_N: Tensor) -> Tensor:
        return -pair_priority(self.seed, feature_N, context_N)

    def _config(self) -> dict[str, int]:
        return {**super()._config(), "seed": self.seed}


CONTEXT_BITS = 40  # (feature, context) pairs pack into one int64 while contexts < 2**40
_CONTEXT_MASK = (1 << CONTEXT_BITS) - 1
_FLOAT16_MAX = 65504.0


def pair_key(feature_N: Tensor, context_N: Tensor) -> Tensor:
    return (feature_N << CONTEXT_BITS) | context_N


def _lookup(sorted_keys_M: Tensor, keys_N: Tensor) -> tuple[Tensor, Tensor]:
    """(index into sorted_keys_M, whether it is there) for each key."""
    if sorted_keys_M.numel() == 0:
        zeros_N = torch.zeros_like(keys_N)
        return zeros_N, zeros_N.to(torch.bool)
    index_N = torch.searchsorted(sorted_keys_M, keys_N).clamp(max=sorted_keys_M.numel() - 1)
    return index_N, sorted_keys_M[index_N] == keys_N


def _check_positions(pos_N: Tensor | None, context_N: Tensor, width: int) -> Tensor:
    if pos_N is None:
        raise ValueError(f"this selection keeps per-token activations (width={width}); pass pos_N")
    if pos_N.shape != context_N.shape:
        raise ValueError(f"pos_N has shape {tuple(pos_N.shape)}, not {tuple(context_N.shape)}")
    if pos_N.numel() and (int(pos_N.min()) < 0 or int(pos_N.max()) >= width):
        raise ValueError(f"token positions must lie in [0, {width}), the context width")
    if context_N.numel() and int(context_N.max()) >= 1 << CONTEXT_BITS:
        raise ValueError(f"context ids must be below 2**{CONTEXT_BITS}")
    return pos_N
