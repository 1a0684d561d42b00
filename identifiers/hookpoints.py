"""Hookpoint names, and the TransformerLens / SAELens / Hugging Face names they map from.

glossator's names, each defined as TransformerLens defines its hook (what the residual
stream actually receives, whatever the Hugging Face modules are called):

    embed              the residual stream before block 0    blocks.0.hook_resid_pre
    layers.N.attn.z    per-head attention outputs before the output projection,
                       heads flattened [n_heads * d_head]     blocks.N.attn.hook_z
    layers.N.attn      what attention adds to the residual    blocks.N.hook_attn_out
    layers.N.resid_mid the residual after attention is added  blocks.N.hook_resid_mid
    layers.N.mlp_in    the MLP's normed input                 blocks.N.ln2.hook_normalized
    layers.N.mlp       what the MLP adds to the residual      blocks.N.hook_mlp_out
    layers.N           the residual stream after block N      blocks.N.hook_resid_post

Also mapped: `blocks.N.mlp.hook_in` (the MLP's input, as circuit-tracer and
TransformerLens' bridge name it) to layers.N.mlp_in. A module's raw output
(`model.layers.N.mlp`, `blocks.N.mlp.hook_out`) is mapped only against the model
(`modules`, from `probes.hookpoints.module_hookpoints`), where it is exactly a hookpoint:
`model.layers.N.mlp` is layers.N.mlp on Llama but not on Gemma, which norms it first.

Parsed here only; whether a model has the point is for `probes.hookpoints` to say.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from errors import UserError

EMBED = "embed"
# Sites of a block in the order the block computes them.
SITES = ("attn.z", "attn", "resid_mid", "mlp_in", "mlp", "resid")

_NAME = re.compile(r"layers\.(\d+)(?:\.(attn\.z|attn|resid_mid|mlp_in|mlp))?")
# TransformerLens hook name -> our site (blocks.N.<hook>).
_TL_SITES = {
    "hook_resid_post": "resid",
    "hook_resid_mid": "resid_mid",
    "hook_attn_out": "attn",
    "hook_mlp_out": "mlp",
    "ln2.hook_normalized": "mlp_in",
    "attn.hook_z": "attn.z",
}
_TL_NAMES = {site: hook for hook, site in _TL_SITES.items()}
# Other names of the same tensors, read but never written back. (Not `hook_mlp_in`: the
# residual entering ln2 in HookedTransformer, the MLP's normed input in its bridge.)
_TL_ALIASES = {"mlp.hook_in": "mlp_in"}
_TL = re.compile(
    r"blocks\.(\d+)\.(hook_resid_pre|"
    + "|".join(map(re.escape, {**_TL_SITES, **_TL_ALIASES}))
    + ")"
)
# A Hugging Face block's module path, as SAELens' AutoModel path and sparsify write it
# ("model.layers.3", "transformer.h.3", "gpt_neox.layers.3"): the block's output.
_HF_BLOCK = re.compile(r"(?:[A-Za-z_]\w*\.)*(?:layers|h)\.(\d+)")
_HF_SUBMODULE = re.compile(r"(?:[A-Za-z_]\w*\.)*(?:layers|h)\.\d+\.\w+(?:\.\w+)*")
# A module's raw output under TransformerLens' bridge / circuit-tracer names.
_MODULE_OUTPUT = re.compile(r"blocks\.\d+\.(?:mlp|attn)\.hook_out")

KNOWN_NAMES = (
    "glossator: embed, layers.N, layers.N.attn, layers.N.attn.z, layers.N.resid_mid, "
    "layers.N.mlp_in, layers.N.mlp; TransformerLens/SAELens: blocks.N.hook_resid_pre, "
    "blocks.N.hook_resid_mid, blocks.N.hook_resid_post, blocks.N.hook_attn_out, "
    "blocks.N.hook_mlp_out, blocks.N.ln2.hook_normalized, blocks.N.mlp.hook_in, "
    "blocks.N.attn.hook_z; Hugging Face block outputs: model.layers.N, transformer.h.N, "
    "gpt_neox.layers.N"
)


class UnknownHookNameError(UserError):
    """A hook name that maps to none of glossator's hookpoints."""


class HookNameNeedsModelError(UnknownHookNameError):
    """A module's raw output, which only the model can say is a hookpoint or not."""


@dataclass(frozen=True)
class Hookpoint:
    layer: int  # 0 for embed
    site: str  # "embed" or one of SITES

    @property
    def name(self) -> str:
        if self.site == EMBED:
            return EMBED
        return (
            f"layers.{self.layer}" if self.site == "resid" else f"layers.{self.layer}.{self.site}"
        )

    @property
    def depth(self) -> tuple[int, int]:
        """Order of execution inside the model: the embeddings, then each block's sites."""
        return self.layer, -1 if self.site == EMBED else SITES.index(self.site)


def hookpoint_from_name(name: str | None) -> Hookpoint | None:
    """The hookpoint `name` spells in glossator's names, or None when it spells none."""
    if name == EMBED:
        return Hookpoint(0, EMBED)
    match = _NAME.fullmatch(name or "")
    if match is None:
        return None
    return Hookpoint(int(match.group(1)), match.group(2) or "resid")


def hookpoint_from_hook_name(hook_name: str | None) -> str | None:
    """Our hookpoint name for a glossator, TransformerLens or Hugging Face block name, or
    None when it maps to none (`resolve_hook_name` says why)."""
    try:
        return resolve_hook_name(hook_name or "")
    except UnknownHookNameError:
        return None


def resolve_hook_name(hook_name: str, modules: Mapping[str, str] | None = None) -> str:
    """Our hookpoint name for `hook_name`; UnknownHookNameError naming it otherwise.

    `modules`: module names of the model to be read whose output is exactly one of its
    hookpoints (name -> hookpoint); without it, such a name raises HookNameNeedsModelError.
    """
    ours = hookpoint_from_name(hook_name)
    if ours is not None:
        return ours.name
    tl = _TL.fullmatch(hook_name)
    if tl is not None:
        layer, hook = int(tl.group(1)), tl.group(2)
        if hook == "hook_resid_pre":  # block N's input: block N-1's output
            return EMBED if layer == 0 else f"layers.{layer - 1}"
        return Hookpoint(layer, {**_TL_SITES, **_TL_ALIASES}[hook]).name
    block = _HF_BLOCK.fullmatch(hook_name)
    if block is not None:
        return f"layers.{block.group(1)}"
    if modules is not None and hook_name in modules:
        return modules[hook_name]
    raw_output = bool(_HF_SUBMODULE.fullmatch(hook_name) or _MODULE_OUTPUT.fullmatch(hook_name))
    known = KNOWN_NAMES
    if modules is not None:
        known += f"; module outputs, on this model: {_module_examples(modules)}"

    def error(why: str) -> str:
        return (
            f"unknown hook name {hook_name!r}{why}; glossator reads only points it can find "
            f"in the model, named: {known}"
        )

    if raw_output and modules is None:
        raise HookNameNeedsModelError(
            error(
                " (a module's raw output: mapped when the SAE is loaded for a model on which "
                "that output is exactly a hookpoint)"
            )
        )
    if raw_output:
        raise UnknownHookNameError(
            error(" (a module's output that is not exactly one of this model's hookpoints)")
        )
    raise UnknownHookNameError(error(""))


def _module_examples(modules: Mapping[str, str]) -> str:
    """The module names of block 0, written for block N ("model.layers.N.mlp -> layers.N.mlp")."""
    block0 = re.compile(r"\.0(?=\.|$)")
    pairs = {
        f"{block0.sub('.N', name)} -> {hookpoint.replace('layers.0', 'layers.N')}"
        for name, hookpoint in modules.items()
        if hookpoint == "layers.0" or hookpoint.startswith("layers.0.")
    }
    return ", ".join(sorted(pairs)) or "none"


def hook_name_from_hookpoint(hookpoint: str | None) -> str | None:
    """The TransformerLens hook name of our hookpoint, or None for a name we do not know."""
    parsed = hookpoint_from_name(hookpoint)
    if parsed is None:
        return None
    if parsed.site == EMBED:
        return "blocks.0.hook_resid_pre"
    return f"blocks.{parsed.layer}.{_TL_NAMES[parsed.site]}"
