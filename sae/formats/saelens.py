"""SAELens folders (`cfg.json` + `sae_weights.safetensors`): glossator's native format.

Reads SAELens >= 6 configs (`architecture`, `d_in`, `d_sae`, `metadata`, ...) and the flat
pre-6.0 ones (`hook_point`, `activation_fn_str`, ...), converted the way SAELens'
`handle_pre_6_0_config` does. Writes SAELens 6 configs. What our `SAEConfig` has no field
for stays in `SAEConfig.metadata`, so that a load + save round trip keeps it:

    metadata["hook_name"]  the TransformerLens hook name, e.g. "blocks.6.hook_resid_post"
    metadata["saelens"]    {"metadata": SAELens metadata fields, "extra": other fields}

and our own metadata travels in the SAELens metadata under "glossator".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from sae.base import SAEConfig, SAEError, SparseAutoencoder
from sae.formats import (
    as_int,
    assemble,
    check_d_in,
    dtype_name,
    make_config,
    parse_dtype,
    read_json,
    read_safetensors,
    require,
)
from sae.formats.saelens_names import (
    AS_JUMPRELU,
    CFG_FILE,
    FORMAT_VERSION,
    FROM_SAELENS,
    SAVED_AS,
    SCALER_FILE,
    TO_SAELENS,
    TOPK_FAMILY,
    TRANSCODERS,
    WEIGHTS_FILE,
    hook_name_from_hookpoint,
    hookpoint_from_hook_name,
)
from sae.formats.saelens_tensors import fold_normalization, our_tensors
from sae.formats.saelens_write import write

__all__ = [
    "CFG_FILE",
    "SCALER_FILE",
    "TO_SAELENS",
    "WEIGHTS_FILE",
    "hook_name_from_hookpoint",
    "hookpoint_from_hook_name",
    "load",
    "write",
]

# Fields SAELens moves from a pre-6.0 flat config into `metadata` (its LLM_METADATA_KEYS).
LEGACY_METADATA_KEYS = (
    "model_name",
    "hook_name",
    "model_class_name",
    "hook_head_index",
    "model_from_pretrained_kwargs",
    "prepend_bos",
    "exclude_special_tokens",
    "neuronpedia_id",
    "context_size",
    "seqpos_slice",
    "dataset_path",
    "sae_lens_version",
    "sae_lens_training_version",
)
LEGACY_RENAMES = {
    "hook_point": "hook_name",
    "hook_point_head_index": "hook_head_index",
    "activation_fn_str": "activation_fn",
}
# Modern fields read into SAEConfig (or checked and dropped); everything else is "extra".
# SAELens' per-input normalisations, applied at run time (sae.base); the third,
# expected_average_only_in, is a constant factor folded into the weights on load.
RUN_TIME_NORMS = ("layer_norm", "constant_norm_rescale")
CONSUMED = {
    "architecture",
    "d_in",
    "d_sae",
    "dtype",
    "device",
    "apply_b_dec_to_input",
    "normalize_activations",
    "reshape_activations",
    "rescale_acts_by_decoder_norm",
    "finetuning_scaling_factor",
    "metadata",
    "meta",
}

# -- loading ------------------------------------------------------------------------------


def load(
    folder: Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    expected_d_in: int | None = None,
) -> SparseAutoencoder:
    cfg_path = folder / CFG_FILE
    raw = read_json(cfg_path, "an SAELens folder needs cfg.json next to sae_weights.safetensors")
    modern = _modernize(raw, cfg_path)
    cfg, tensor_dtype = _parse(modern, cfg_path, dtype)
    check_d_in(cfg.d_in, expected_d_in, cfg.hookpoint or cfg.metadata.get("hook_name"), cfg_path)
    weights_path = folder / WEIGHTS_FILE
    tensors = read_safetensors(weights_path, "re-save the SAE or download it again")
    tensors = our_tensors(tensors, cfg, raw, weights_path)
    tensors = fold_normalization(tensors, cfg, modern, folder)
    return assemble(cfg, tensors, weights_path, device=device, dtype=tensor_dtype)


def _is_modern(raw: dict[str, Any]) -> bool:
    """SAELens' own test: a sae_lens_version >= 6 (top level or in metadata)."""
    version = raw.get("sae_lens_version")
    for key in ("metadata", "meta"):
        if not version and isinstance(raw.get(key), dict):
            version = raw[key].get("sae_lens_version")
    major = re.match(r"\s*(\d+)", str(version or ""))
    return major is not None and int(major.group(1)) >= 6


def _modernize(raw: dict[str, Any], source: Path) -> dict[str, Any]:
    """A SAELens 6 config dict; pre-6.0 flat configs are converted as SAELens does."""
    if _is_modern(raw):
        cfg = dict(raw)
        meta = cfg.pop("metadata", None)
        if meta is None:
            meta = cfg.pop("meta", None)  # 6.0 release candidates
        if meta is not None and not isinstance(meta, dict):
            raise SAEError(f"{source}: 'metadata' must be a JSON object, found {meta!r}")
        cfg["metadata"] = dict(meta or {})
        return cfg
    flat = {k: v for k, v in raw.items() if k not in LEGACY_RENAMES and k != "metadata"}
    if isinstance(raw.get("metadata"), dict):  # metadata fields without a version: keep them
        for key, value in raw["metadata"].items():
            flat.setdefault(key, value)
    for old, new in LEGACY_RENAMES.items():  # an explicit new name wins over the old one
        if old in raw:
            flat.setdefault(new, raw[old])
    architecture = flat.pop("architecture", None) or "standard"
    activation = flat.pop("activation_fn", None) or "relu"
    kwargs = flat.pop("activation_fn_kwargs", None) or {}
    if activation not in ("relu", "topk") or (
        "topk" in (activation, architecture) and architecture not in ("standard", "topk")
    ):
        raise SAEError(
            f"{source}: unsupported pre-6.0 SAELens activation {activation!r} for architecture "
            f"{architecture!r}; supported: 'relu' (standard, gated, jumprelu) and 'topk'"
        )
    if "topk" in (activation, architecture):
        architecture = "topk"
        if "k" not in flat and isinstance(kwargs, dict) and "k" in kwargs:
            flat["k"] = kwargs["k"]
    norm = flat.get("normalize_activations")
    if isinstance(norm, bool):
        flat["normalize_activations"] = "expected_average_only_in" if norm else "none"
    flat.setdefault("prepend_bos", True)  # SAELens' defaults for old configs
    flat.setdefault("sae_lens_training_version", None)
    flat.setdefault("neuronpedia_id", None)
    meta = {k: flat.pop(k) for k in LEGACY_METADATA_KEYS if k in flat}
    meta.setdefault("sae_lens_version", FORMAT_VERSION)  # SAELens stamps its own version
    return {**flat, "architecture": architecture, "metadata": meta}


def _parse(
    modern: dict[str, Any], source: Path, dtype: str | torch.dtype | None
) -> tuple[SAEConfig, torch.dtype]:
    theirs = require(modern, "architecture", source)
    if theirs not in FROM_SAELENS:
        raise SAEError(
            f"{source}: unknown SAELens architecture {theirs!r}; known: "
            f"{', '.join(sorted(FROM_SAELENS))}"
        )
    architecture = FROM_SAELENS[theirs]
    saved_as = _saved_as(modern, theirs, source)
    if saved_as:
        architecture = saved_as["architecture"]
        modern = {**modern, **{k: v for k, v in saved_as.items() if k != "architecture"}}
    _refuse_unsupported(modern, source)
    tensor_dtype = parse_dtype(
        dtype if dtype is not None else modern.get("dtype") or "float32", source
    )
    sl_meta = dict(modern["metadata"])
    glossator = sl_meta.pop("glossator", None)
    if not isinstance(glossator, dict):
        if glossator is not None:
            sl_meta["glossator"] = glossator
        glossator = {}
    ours = dict(glossator)
    ours.pop(SAVED_AS, None)  # read by _saved_as
    model_name = sl_meta.pop("model_name", None)
    hook_name = sl_meta.pop("hook_name", None)
    if sl_meta.get("sae_lens_version") == FORMAT_VERSION:
        del sl_meta["sae_lens_version"]  # our own marker (or SAELens' stamp on old configs)
    hookpoint = (
        ours.pop("hookpoint") if "hookpoint" in ours else hookpoint_from_hook_name(hook_name)
    )
    if hook_name is not None:
        ours["hook_name"] = hook_name
    fields: dict[str, Any] = {}
    consumed = set(CONSUMED)
    if architecture in TOPK_FAMILY:
        consumed.add("k")
        if modern.get("k") is None:
            raise SAEError(f"{source}: a {theirs!r} SAE needs 'k' (active features per token)")
        fields["k"] = as_int(modern["k"], "k", source)
    if architecture == "matryoshka":
        consumed.add("matryoshka_widths")
        fields["matryoshka_widths"] = _matryoshka_widths(modern, source)
    if architecture in TRANSCODERS:
        consumed.add("d_out")
        fields.update(_transcoder_fields(modern, sl_meta, ours, source))
    extra = {k: v for k, v in modern.items() if k not in consumed}
    if sl_meta or extra:
        ours["saelens"] = {"metadata": sl_meta, "extra": extra}
    norm = modern.get("normalize_activations")
    cfg = make_config(
        source,
        architecture=architecture,
        d_in=as_int(require(modern, "d_in", source), "d_in", source),
        d_sae=as_int(require(modern, "d_sae", source), "d_sae", source),
        apply_b_dec_to_input=bool(modern.get("apply_b_dec_to_input", True)),
        normalize_activations=norm if norm in RUN_TIME_NORMS else "none",
        rescale_acts_by_decoder_norm=bool(modern.get("rescale_acts_by_decoder_norm", False)),
        hookpoint=hookpoint,
        model_name=model_name,
        dtype=dtype_name(tensor_dtype),
        metadata=ours,
        **fields,
    )
    return cfg, tensor_dtype


def _transcoder_fields(
    modern: dict[str, Any], sl_meta: dict[str, Any], ours: dict[str, Any], source: Path
) -> dict[str, Any]:
    """d_out, and the output hookpoint from metadata.hook_name_out (kept, as hook_name is,
    in our metadata so that a save writes it back)."""
    d_out = as_int(require(modern, "d_out", source), "d_out", source)
    hook_name_out = sl_meta.pop("hook_name_out", None)
    output = ours.pop("output_hookpoint", None)
    if output is None and hook_name_out is not None:
        # None when unmapped: sae.loading maps it with the model or refuses it.
        output = hookpoint_from_hook_name(str(hook_name_out))
    if hook_name_out is not None:
        ours["hook_name_out"] = hook_name_out
    return {"d_out": d_out, "output_hookpoint": output}


def _saved_as(modern: dict[str, Any], theirs: str, source: Path) -> dict[str, Any]:
    """What a "jumprelu" file we saved from a BatchTopK/Matryoshka SAE was (saelens_write)."""
    glossator = modern["metadata"].get("glossator")
    if theirs != "jumprelu" or not isinstance(glossator, dict):
        return {}
    saved_as = glossator.get(SAVED_AS)
    if saved_as is None:
        return {}
    if not isinstance(saved_as, dict) or saved_as.get("architecture") not in AS_JUMPRELU:
        raise SAEError(
            f"{source}: metadata.glossator.{SAVED_AS} must name one of "
            f"{', '.join(AS_JUMPRELU)}, found {saved_as!r}"
        )
    return saved_as


def _matryoshka_widths(modern: dict[str, Any], source: Path) -> list[int]:
    widths = modern.get("matryoshka_widths") or []
    if not isinstance(widths, list):
        raise SAEError(f"{source}: matryoshka_widths must be a list, found {widths!r}")
    widths = [as_int(w, "matryoshka_widths", source) for w in widths]
    d_sae = as_int(require(modern, "d_sae", source), "d_sae", source)
    if not widths or widths[-1] != d_sae:
        widths.append(d_sae)  # as SAELens does: the last level is the whole dictionary
    return widths


def _refuse_unsupported(modern: dict[str, Any], source: Path) -> None:
    reshape = modern.get("reshape_activations") or "none"
    if reshape != "none":
        raise SAEError(
            f"{source}: reshape_activations={reshape!r} (per-head attention SAEs) is not "
            "supported; use an SAE trained on a residual, MLP or attention output"
        )
    head = modern["metadata"].get("hook_head_index")
    if head is not None:
        raise SAEError(
            f"{source}: hook_head_index={head} (an SAE on one attention head) is not supported"
        )
    norm = modern.get("normalize_activations") or "none"
    if norm not in ("none", "expected_average_only_in", *RUN_TIME_NORMS):
        raise SAEError(
            f"{source}: unknown normalize_activations={norm!r}; SAELens knows 'none', "
            f"'expected_average_only_in', {', '.join(map(repr, RUN_TIME_NORMS))}"
        )
