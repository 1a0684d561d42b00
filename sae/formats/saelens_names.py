"""SAELens' file names, architecture names and TransformerLens hook names, shared by the
SAELens reader (saelens.py) and writer (saelens_write.py)."""

from __future__ import annotations

from identifiers.hookpoints import hook_name_from_hookpoint, hookpoint_from_hook_name

__all__ = ["hook_name_from_hookpoint", "hookpoint_from_hook_name"]  # TransformerLens names

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
    "abstopk": "abstopk",
    "transcoder": "transcoder",
    "skip_transcoder": "skip_transcoder",
    "jumprelu_transcoder": "jumprelu_transcoder",
    "jumprelu_skip_transcoder": "jumprelu_skip_transcoder",
}
# SAELens' transcoders: d_out in the config, metadata.hook_name_out the output hook.
TRANSCODERS = ("transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder")
TO_SAELENS = {ours: theirs for theirs, ours in FROM_SAELENS.items()}
TOPK_FAMILY = ("topk", "abstopk", "batchtopk", "matryoshka")  # have k
# Ours that SAELens' inference loader only knows as "jumprelu" with per-feature thresholds.
AS_JUMPRELU = ("batchtopk", "matryoshka")
# Our key in metadata["glossator"] of such a file: how to read it back as it was.
SAVED_AS = "saved_as_jumprelu"
