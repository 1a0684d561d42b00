"""Named hookpoints in a Hugging Face model, read (and written) through forward hooks, and
a forward pass that stops once every asked-for hookpoint has been read.

Names (identifiers.hookpoints) mean what TransformerLens means by its hooks: what the
residual stream actually receives, whatever the family's modules are called. So on
Gemma-2/3, whose blocks norm the attention and MLP outputs before adding them
(`post_attention_layernorm`, `post_feedforward_layernorm`), `layers.N.attn` and
`layers.N.mlp` are those norms' outputs, and on every family
`layers.N.attn + layers.N.mlp == layers.N - layers.{N-1}` (`embed` for N = 0).
The rest of the model and the LM head never run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from errors import UserError
from identifiers.hookpoints import EMBED, SITES, Hookpoint, hookpoint_from_name

# Where decoder-only families keep their block list and the blocks' sub-modules.
_LAYER_PATHS = (
    "model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.decoder.layers",
    "model.language_model.layers",
)
_ATTN_NAMES = ("self_attn", "attn", "attention")
_MLP_NAMES = ("mlp", "feed_forward")
_OUT_PROJ_NAMES = ("o_proj", "c_proj", "dense", "out_proj")  # attention's output projection
# Blocks that run attention and the MLP side by side on the same input: no residual
# between them, so no `resid_mid` (TransformerLens' parallel_attn_mlp has none either).
_PARALLEL_BLOCKS = ("GPTJBlock", "PhiDecoderLayer", "CohereDecoderLayer")

# fn(value) -> None to only read, or the tensor that replaces the value in the forward.
OnValue = Callable[[torch.Tensor], "torch.Tensor | None"]


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


def is_parallel(block: nn.Module) -> bool:
    return bool(getattr(block, "use_parallel_residual", False)) or (
        type(block).__name__ in _PARALLEL_BLOCKS
    )


def hookpoint_names(model: nn.Module) -> list[str]:
    """Every valid hookpoint name of this model, in execution order."""
    names = [EMBED]
    for i, block in enumerate(decoder_layers(model)):
        sites = [s for s in SITES if not (s == "resid_mid" and is_parallel(block))]
        names += [Hookpoint(i, site).name for site in sites]
    return names


def parse_hookpoint(model: nn.Module, name: str) -> Hookpoint:
    hookpoint = hookpoint_from_name(name)
    layers = decoder_layers(model)
    n_layers = len(layers)
    if hookpoint is None or hookpoint.layer >= n_layers:
        mid = n_layers // 2
        raise UnknownHookpointError(
            f"unknown hookpoint {name!r}; valid: embed, layers.N, layers.N.attn, "
            f"layers.N.attn.z, layers.N.resid_mid, layers.N.mlp_in, layers.N.mlp "
            f"for N in 0..{n_layers - 1} (e.g. layers.{mid}, layers.{mid}.mlp, "
            f"layers.{mid}.attn)"
        )
    block = layers[hookpoint.layer]
    if hookpoint.site == "resid_mid" and is_parallel(block):
        raise UnknownHookpointError(
            f"{name}: {type(block).__name__} runs attention and the MLP in parallel, so no "
            f"residual lies between them; use layers.{hookpoint.layer - 1} (the block's "
            "input) or layers.N.mlp_in"
            if hookpoint.layer > 0
            else f"{name}: {type(block).__name__} runs attention and the MLP in parallel; "
            "use embed (the block's input) or layers.0.mlp_in"
        )
    return hookpoint


def _child(parent: nn.Module, names: Sequence[str], what: str) -> nn.Module:
    for attr in names:
        sub = getattr(parent, attr, None)
        if isinstance(sub, nn.Module):
            return sub
    raise UnknownHookpointError(f"{type(parent).__name__} has none of {names} ({what})")


def _added_by_attention(block: nn.Module) -> nn.Module:
    """The module whose output the block adds to the residual after attention."""
    if hasattr(block, "post_feedforward_layernorm"):  # Gemma-2/3: normed before the add
        return _child(block, ("post_attention_layernorm",), "attention's post-norm")
    return _child(block, _ATTN_NAMES, "attention")


def _added_by_mlp(block: nn.Module) -> nn.Module:
    """The module whose output the block adds to the residual after the MLP."""
    post = getattr(block, "post_feedforward_layernorm", None)
    return post if isinstance(post, nn.Module) else _child(block, _MLP_NAMES, "MLP")


def tap_site(model: nn.Module, hookpoint: Hookpoint) -> tuple[nn.Module, str]:
    """(module, "output" or "input"): where the hookpoint's tensor passes as a module's
    output or first input. `resid_mid` has no such module (see `attach`)."""
    if hookpoint.site == EMBED:
        return decoder_layers(model)[0], "input"
    block = decoder_layers(model)[hookpoint.layer]
    if hookpoint.site == "resid":
        return block, "output"
    if hookpoint.site == "attn":
        return _added_by_attention(block), "output"
    if hookpoint.site == "mlp":
        return _added_by_mlp(block), "output"
    if hookpoint.site == "mlp_in":
        return _child(block, _MLP_NAMES, "MLP"), "input"
    if hookpoint.site == "attn.z":
        attention = _child(block, _ATTN_NAMES, "attention")
        return _child(attention, _OUT_PROJ_NAMES, "attention output projection"), "input"
    raise UnknownHookpointError(f"{hookpoint.name} is not read through a single module")


def hookpoint_module(model: nn.Module, hookpoint: Hookpoint) -> nn.Module:
    """The module whose output is the hookpoint's tensor (for sites read from an output)."""
    module, side = tap_site(model, hookpoint)
    if side != "output":
        raise UnknownHookpointError(f"{hookpoint.name} is a module's input, not its output")
    return module


def hookpoint_width(model: nn.Module, name: str) -> int:
    """The width D of the activations [B, T, D] at hookpoint `name`."""
    hookpoint = parse_hookpoint(model, name)
    if hookpoint.site == "attn.z":  # n_heads * d_head: the output projection's input
        proj, _ = tap_site(model, hookpoint)
        weight = getattr(proj, "weight", None)
        if isinstance(proj, nn.Linear):
            return proj.in_features
        if isinstance(weight, torch.Tensor):  # GPT-2's Conv1D keeps weight as [in, out]
            return int(weight.shape[0])
    config: Any = model.config  # a PretrainedConfig
    return int(config.hidden_size)


def module_hookpoints(model: nn.Module) -> dict[str, str]:
    """Module names whose output is exactly one of the model's hookpoints -> that hookpoint.

    Names as SAELens' AutoModel path writes them (from the model: "model.layers.3.mlp")
    and as sparsify does (from the base model: "layers.3.mlp"), plus TransformerLens'
    bridge / circuit-tracer `blocks.N.mlp.hook_out` and `blocks.N.attn.hook_out` (the
    MLP's and attention's raw outputs). Found by module identity, so a module is listed
    only where the hookpoint is read from its output: Gemma's `mlp` is not layers.N.mlp.
    """
    names: dict[int, list[str]] = {}
    base: Any = getattr(model, "base_model", model)
    for root in (model, base):
        for name, module in root.named_modules(remove_duplicate=False):
            if name:
                names.setdefault(id(module), []).append(name)
    table: dict[str, str] = {}
    for name in hookpoint_names(model):
        hookpoint = parse_hookpoint(model, name)
        if hookpoint.site in (EMBED, "resid_mid"):
            continue
        module, side = tap_site(model, hookpoint)
        if side == "output":
            table.update(dict.fromkeys(names.get(id(module), []), name))
    for i, block in enumerate(decoder_layers(model)):
        if _added_by_mlp(block) is _child(block, _MLP_NAMES, "MLP"):
            table[f"blocks.{i}.mlp.hook_out"] = f"layers.{i}.mlp"
        if _added_by_attention(block) is _child(block, _ATTN_NAMES, "attention"):
            table[f"blocks.{i}.attn.hook_out"] = f"layers.{i}.attn"
    return table


def _swap_first(output: Any, new: torch.Tensor) -> Any:
    return (new, *output[1:]) if isinstance(output, tuple) else new


def _first_tensor(output: Any) -> torch.Tensor:
    # Blocks and attention modules return tuples in many transformers versions.
    return output[0] if isinstance(output, tuple) else output


def attach(model: nn.Module, hookpoint: Hookpoint, on_value: OnValue) -> list[Any]:
    """Hooks that call `on_value` with the hookpoint's tensor [B, T, D] each forward and,
    when it returns a tensor, put that in the tensor's place. Returns the handles."""
    if hookpoint.site == "resid_mid":
        return _attach_resid_mid(model, hookpoint.layer, on_value)
    module, side = tap_site(model, hookpoint)
    if side == "output":

        def out_hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            new = on_value(_first_tensor(output))
            return None if new is None else _swap_first(output, new)

        return [module.register_forward_hook(out_hook)]

    def in_hook(_module: nn.Module, args: Any, kwargs: Any) -> Any:
        value = args[0] if args else kwargs["hidden_states"]
        new = on_value(value)
        if new is None:
            return None
        if args:
            return (new, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": new}

    return [module.register_forward_pre_hook(in_hook, with_kwargs=True)]


def _attach_resid_mid(model: nn.Module, layer: int, on_value: OnValue) -> list[Any]:
    """resid_mid = the block's input + what attention adds (TransformerLens'
    hook_resid_mid). Written by changing what attention adds to new - input."""
    block = decoder_layers(model)[layer]
    seen: dict[str, torch.Tensor] = {}

    def keep_input(_module: nn.Module, args: Any, kwargs: Any) -> None:
        seen["pre"] = args[0] if args else kwargs["hidden_states"]

    def on_attention(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        pre = seen.pop("pre")
        added = _first_tensor(output)
        new = on_value(pre + added)
        return None if new is None else _swap_first(output, new - pre)

    return [
        block.register_forward_pre_hook(keep_input, with_kwargs=True),
        _added_by_attention(block).register_forward_hook(on_attention),
    ]


class _StopForward(Exception):
    """Raised from a hook once every hookpoint is read, to end the forward pass early."""


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
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def reader(name: str) -> OnValue:
        def read(value: torch.Tensor) -> None:
            captured[name] = value
            if len(captured) == len(points):
                raise _StopForward

        return read

    try:
        for name, hp in points.items():
            handles += attach(model, hp, reader(name))
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
