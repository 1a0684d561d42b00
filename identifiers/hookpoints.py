"""Hookpoint names: `layers.N` is the residual stream after block N, `layers.N.mlp` the
MLP's output, `layers.N.attn` the attention output. Parsed here only; whether a model
has layer N is for `probes.hookpoints.parse_hookpoint` to say."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"layers\.(\d+)(?:\.(mlp|attn))?")


@dataclass(frozen=True, order=True)
class Hookpoint:
    layer: int
    site: str  # "resid", "mlp" or "attn"; sorts so that attn/mlp precede resid of a layer

    @property
    def name(self) -> str:
        return (
            f"layers.{self.layer}" if self.site == "resid" else f"layers.{self.layer}.{self.site}"
        )

    @property
    def depth(self) -> tuple[int, int]:
        """Order of execution inside the model: attention, then MLP, then the block output."""
        return self.layer, {"attn": 0, "mlp": 1, "resid": 2}[self.site]


def hookpoint_from_name(name: str | None) -> Hookpoint | None:
    """The hookpoint `name` spells, or None when it is not a hookpoint name."""
    match = _NAME.fullmatch(name or "")
    if match is None:
        return None
    return Hookpoint(int(match.group(1)), match.group(2) or "resid")
