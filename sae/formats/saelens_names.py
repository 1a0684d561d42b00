"""SAELens' file names, architecture names and TransformerLens hook names, shared by the
SAELens reader (saelens.py) and writer (saelens_write.py)."""

from __future__ import annotations

import re

from identifiers.hookpoints import hookpoint_from_name

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SCALER_FILE = "activation_scaler.json"  # SAELens training checkpoints: {"scaling_factor": s}
# The version marker we write: SAELens reads configs older than 6.0 as flat legacy ones.
FORMAT_VERSION = "6.0.0"

# SAELens architecture -> ours. SAELens saves trained BatchTopK/Matryoshka SAEs as
# "jumprelu" (and so do we, see saelens_write.py); "batchtopk" and
# "matryoshka_batchtopk" are its training checkpoints.
FROM_SAELENS = {
    "standard": "standard",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "gated": "gated",
    "batchtopk": "batchtopk",
    "matryoshka_batchtopk": "matryoshka",
}
TO_SAELENS = {ours: theirs for theirs, ours in FROM_SAELENS.items()}
TOPK_FAMILY = ("topk", "batchtopk", "matryoshka")
# Ours that SAELens' inference loader only knows as "jumprelu" with per-feature thresholds.
AS_JUMPRELU = ("batchtopk", "matryoshka")
# Our key in metadata["glossator"] of such a file: how to read it back as it was.
SAVED_AS = "saved_as_jumprelu"

# -- hook names ---------------------------------------------------------------------------

# Our site -> TransformerLens hook (blocks.N.<hook>); a site only counts where
# identifiers.hookpoints knows it.
_TL_HOOKS = {
    "resid": "hook_resid_post",
    "mlp": "hook_mlp_out",
    "attn": "hook_attn_out",
    "resid_mid": "hook_resid_mid",
    "mlp_in": "ln2.hook_normalized",
    "attn.z": "attn.hook_z",
}
_HOOK = re.compile(
    r"blocks\.(\d+)\.(hook_resid_pre|" + "|".join(map(re.escape, _TL_HOOKS.values())) + ")"
)


def _known(name: str) -> str | None:
    parsed = hookpoint_from_name(name)
    return parsed.name if parsed is not None else None


def hookpoint_from_hook_name(hook_name: str | None) -> str | None:
    """Our hookpoint for a TransformerLens hook name, or None when we have no such point.

    blocks.N.hook_resid_post -> layers.N, hook_mlp_out -> layers.N.mlp, hook_attn_out ->
    layers.N.attn, blocks.N.hook_resid_pre -> layers.{N-1} (for N = 0 the embeddings,
    where glossator has such a hookpoint), and the other sites where glossator has them.
    """
    match = _HOOK.fullmatch(hook_name) if isinstance(hook_name, str) else None
    if match is None:
        return None
    layer, hook = int(match.group(1)), match.group(2)
    if hook == "hook_resid_pre":
        return f"layers.{layer - 1}" if layer > 0 else _known("embed")
    site = next(site for site, tl in _TL_HOOKS.items() if tl == hook)
    return _known(f"layers.{layer}" if site == "resid" else f"layers.{layer}.{site}")


def hook_name_from_hookpoint(hookpoint: str | None) -> str | None:
    """The TransformerLens hook name of our hookpoint, or None for a name we do not know."""
    parsed = hookpoint_from_name(hookpoint)
    if parsed is None:
        return None
    if parsed.site == "embed":
        return "blocks.0.hook_resid_pre"
    hook = _TL_HOOKS.get(parsed.site)
    return f"blocks.{parsed.layer}.{hook}" if hook else None
