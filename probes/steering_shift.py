"""A feature's steering shift: its decoder direction d_f added where the dictionary writes.

d_f, the change in the dictionary's output per unit of the feature's activation, is
taken from the dictionary's own decoding: decode(e_f) - decode(0), with e_f the code
that holds 1 for feature f. That is W_dec[f], divided by ||W_dec[f]|| when activations
are rescaled by decoder norms; b_dec cancels. What the dictionary does after decoding,
its `_finish(x, out)`, is affine in `out` for every architecture here, so per row
d_f(x) = finish(x, d_f) - finish(x, 0): an SAE that rescales its input to norm sqrt(d_in)
at run time scales d_f by ||x|| / sqrt(d_in) (layer_norm: by x's standard deviation; the
mean cancels); a transcoder's output is its decoded codes as they are, and a
skip-transcoder's skip term cancels.

    additive  x + strength * d_f
    clamped   x + (clamp - a_f(x)) * d_f    a_f(x): the feature's activation, encoded
                                            from what the dictionary reads there
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from numbers import Real

import torch
from torch import nn

from errors import UserError
from probes.hookpoints import attach, parse_hookpoint
from probes.sae_runner import CHUNK_ELEMENTS, FeatureIndexError
from probes.splice import spliced
from sae.base import SparseAutoencoder, SparseCodes

# (what the dictionary reads [N, d_in], the written tensor [N, d_out]) -> the new written one
Shift = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SteeringError(UserError):
    """A steering experiment that cannot run as asked; the message says what to pass."""


@dataclass(frozen=True)
class Steering:
    """What to do to feature `feature`: add `strength` units of it, or clamp it to `clamp`."""

    feature: int
    strength: float | None = None  # additive: x + strength * d_f at every steered position
    clamp: float | None = None  # clamped: x + (clamp - a_f(x)) * d_f

    def __post_init__(self) -> None:
        if (self.strength is None) == (self.clamp is None):
            raise SteeringError(
                "give exactly one of strength (add that many units of the feature) or "
                f"clamp (set its activation to that value); got strength={self.strength}, "
                f"clamp={self.clamp}"
            )
        which, value = ("strength", self.strength) if self.clamp is None else ("clamp", self.clamp)
        if not isinstance(value, Real) or not math.isfinite(value):
            raise SteeringError(f"{which} must be a finite number, got {value!r}")


def steering_of(
    feature: int,
    *,
    strength: float | None = None,
    clamp: float | None = None,
    times: float | None = None,
    max_act: float | None = None,
) -> Steering:
    """A steering as people ask for it: add `strength`, clamp to `clamp`, or clamp to
    `times` the feature's largest activation in its evidence (`max_act`)."""
    given = [name for name, v in (("strength", strength), ("clamp", clamp), ("times", times))
             if v is not None]  # fmt: skip
    if len(given) != 1:
        raise SteeringError(
            "give exactly one of strength (units of the feature to add), clamp (the "
            "activation to set) or times (a multiple of its largest activation); got "
            f"{', '.join(given) or 'none'}"
        )
    if times is None:
        return Steering(feature, strength=strength, clamp=clamp)
    if max_act is None or not max_act > 0:
        raise SteeringError(
            f"feature {feature} never fired in its evidence, so it has no largest "
            "activation to multiply: give strength or clamp instead of times"
        )
    return Steering(feature, clamp=times * max_act)


# -- the feature's direction and activation ------------------------------------------------


@torch.no_grad()
def decoder_direction(sae: SparseAutoencoder, feature: int) -> torch.Tensor:
    """[d_out]: what one unit of the feature's activation adds to the output, on the SAE's
    device: decode(e_f) - decode(0). For a dictionary that normalises its input at run
    time this is in its normalised space; `output_deltas` gives each row's d_f(x)."""
    check_feature(sae, feature)
    index_11 = torch.tensor([[feature]], device=sae.device)
    one = SparseCodes(torch.ones(1, 1, dtype=sae.dtype, device=sae.device), index_11)
    zero = SparseCodes(torch.zeros(1, 1, dtype=sae.dtype, device=sae.device), index_11)
    # `decode` refuses dictionaries that normalise at run time (their output needs x);
    # the part that needs x is applied per row in `output_deltas`.
    return (sae._decode(one) - sae._decode(zero))[0]


@torch.no_grad()
def output_deltas(
    sae: SparseAutoencoder, direction_D: torch.Tensor, x_ND: torch.Tensor
) -> torch.Tensor:
    """[N, d_out]: d_f(x) for each row x the dictionary reads, on the SAE's device: the
    direction, scaled by the row's run-time normalisation where there is one."""
    if sae.decode_needs_input() is None:  # the output is the decoded codes as they are
        return direction_D.expand(x_ND.shape[0], -1)
    x_ND = x_ND.to(sae.device, sae.dtype)
    base_ND = torch.zeros(x_ND.shape[0], sae.d_out, dtype=sae.dtype, device=sae.device)
    return sae._finish(x_ND, base_ND + direction_D) - sae._finish(x_ND, base_ND)


@torch.no_grad()
def feature_activation(sae: SparseAutoencoder, feature: int, x_ND: torch.Tensor) -> torch.Tensor:
    """[N]: the feature's activation for each row, a bounded chunk of rows at a time."""
    step = max(1, CHUNK_ELEMENTS // sae.d_sae)
    parts = []
    for chunk_ND in x_ND.split(step):
        values_NK, indices_NK = sae.encode_sparse(chunk_ND.to(sae.device))
        parts.append((values_NK * (indices_NK == feature)).sum(dim=-1))
    if not parts:
        return torch.zeros(0, dtype=sae.dtype, device=sae.device)
    return torch.cat(parts)


def feature_shift(sae: SparseAutoencoder, steering: Steering) -> Shift:
    """(read, written) -> the written tensor with the steering applied, at steered rows."""
    direction_D = decoder_direction(sae, steering.feature)

    def shift(read_ND: torch.Tensor, written_ND: torch.Tensor) -> torch.Tensor:
        delta_ND = output_deltas(sae, direction_D, read_ND)
        if steering.clamp is not None:
            active_N = feature_activation(sae, steering.feature, read_ND)
            coeff: torch.Tensor | float = (steering.clamp - active_N)[:, None]
        else:
            coeff = float(steering.strength or 0.0)
        # Added in float32 at least, then rounded once to the model's dtype by `spliced`.
        dtype = torch.promote_types(written_ND.dtype, torch.float32)
        return written_ND.to(dtype) + (coeff * delta_ND).to(written_ND.device, dtype)

    return shift


@contextmanager
def steered(
    model: nn.Module,
    hookpoint: str,
    output_hookpoint: str,
    steer_BT: torch.Tensor,
    shift: Shift,
) -> Iterator[None]:
    """Within the block, `output_hookpoint`'s tensor at `steer_BT` positions is shifted,
    given what the dictionary reads at `hookpoint` (the same tensor for an SAE; for a
    transcoder its input hookpoint, read by a hook of its own as `sae_spliced` does)."""
    if output_hookpoint == hookpoint:
        with spliced(model, hookpoint, steer_BT, lambda x_ND: shift(x_ND, x_ND)):
            yield
        return
    reads: list[torch.Tensor] = []

    def keep(x_BTD: torch.Tensor) -> None:
        reads.append(x_BTD[steer_BT.to(x_BTD.device)])

    with ExitStack() as stack:
        for handle in attach(model, parse_hookpoint(model, hookpoint), keep):
            stack.callback(handle.remove)
        stack.enter_context(
            spliced(model, output_hookpoint, steer_BT, lambda y_ND: shift(reads.pop(), y_ND))
        )
        yield


def check_feature(sae: SparseAutoencoder, feature: int) -> None:
    if not 0 <= feature < sae.d_sae:
        raise FeatureIndexError(
            f"unknown feature index {feature}: this SAE has {sae.d_sae} features, "
            f"valid indices 0..{sae.d_sae - 1}"
        )
