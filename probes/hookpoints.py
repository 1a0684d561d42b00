"""Named hookpoints and a forward pass that stops right after the deepest one.

Names: `layers.N` is the residual stream after block N (the block's output),
`layers.N.mlp` the MLP's output, `layers.N.attn` the attention output (before it is
added to the residual stream). The rest of the model and the LM head never run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from errors import UserError
from identifiers.hookpoints import Hookpoint, hookpoint_from_name

# Where decoder-only families keep their block list and the blocks' sub-modules.
_LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")
_ATTN_NAMES = ("self_attn", "attn", "attention")
_MLP_NAMES = ("mlp", "feed_forward")


class UnknownHookpointError(UserError):
    """A hookpoint name the model does not have."""


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks."""
    for path in _LAYER_PATHS:
        module: Any = model
        for attr in path.split("."):
            module = getattr(module, attr, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise UnknownHookpointError(
        f"cannot find the transformer blocks of {type(model).__name__}; "
        f"looked for {', '.join(_LAYER_PATHS)}"
    )


def hookpoint_names(model: nn.Module) -> list[str]:
    """Every valid hookpoint name of this model, in execution order."""
    n = len(decoder_layers(model))
    return [f"layers.{i}{suffix}" for i in range(n) for suffix in (".attn", ".mlp", "")]


def parse_hookpoint(model: nn.Module, name: str) -> Hookpoint:
    hookpoint = hookpoint_from_name(name)
    n_layers = len(decoder_layers(model))
    if hookpoint is None or hookpoint.layer >= n_layers:
        raise UnknownHookpointError(
            f"unknown hookpoint {name!r}; valid: layers.N, layers.N.attn, layers.N.mlp "
            f"for N in 0..{n_layers - 1} (e.g. layers.{n_layers // 2}, "
            f"layers.{n_layers // 2}.mlp, layers.{n_layers // 2}.attn)"
        )
    return hookpoint


def hookpoint_module(model: nn.Module, hookpoint: Hookpoint) -> nn.Module:
    block = decoder_layers(model)[hookpoint.layer]
    if hookpoint.site == "resid":
        return block
    names = _ATTN_NAMES if hookpoint.site == "attn" else _MLP_NAMES
    for attr in names:
        sub = getattr(block, attr, None)
        if isinstance(sub, nn.Module):
            return sub
    raise UnknownHookpointError(f"{type(block).__name__} has none of {names} for {hookpoint.name}")


class _StopForward(Exception):
    """Raised from the deepest hook to end the forward pass early."""


def _first_tensor(output: Any) -> torch.Tensor:
    # Blocks and attention modules return tuples in many transformers versions.
    return output[0] if isinstance(output, tuple) else output


@torch.inference_mode()
def run_to_hookpoints(
    model: nn.Module,
    input_ids_BT: torch.Tensor,
    attention_mask_BT: torch.Tensor,
    names: Sequence[str],
) -> dict[str, torch.Tensor]:
    """Activations [B, T, D] at each named hookpoint; the model stops after the deepest."""
    if not names:
        raise ValueError("give at least one hookpoint")
    points = {name: parse_hookpoint(model, name) for name in names}
    deepest = max(points.values(), key=lambda hp: hp.depth)
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str, hookpoint: Hookpoint) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            captured[name] = _first_tensor(output)
            if hookpoint == deepest and len(captured) == len(points):
                raise _StopForward

        return hook

    for name, hp in points.items():
        handles.append(hookpoint_module(model, hp).register_forward_hook(make_hook(name, hp)))
    try:
        model(input_ids=input_ids_BT, attention_mask=attention_mask_BT, use_cache=False)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = set(points) - set(captured)
    if missing:
        raise RuntimeError(f"hookpoints {sorted(missing)} were never reached in the forward pass")
    return captured
