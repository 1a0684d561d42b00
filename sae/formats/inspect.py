"""What an SAE path holds, and whether glossator can use it (`glossator sae inspect`).

The description comes from the files' configs first (so that a dictionary glossator
refuses is still described), then from loading it the way `load_sae` does: whatever
the reader or the hook-name mapping refuses becomes `usable: false` with its message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from identifiers.hookpoints import (
    HookNameNeedsModelError,
    UnknownHookNameError,
    resolve_hook_name,
)
from sae.base import SAEError, SparseAutoencoder
from sae.formats import dictionary_learning, saelens, sparsify
from sae.formats.detect import as_object, detect_format, format_of, hookpoint_folders, json_or_empty
from sae.formats.saelens_names import hook_name_from_hookpoint

READERS: dict[str, Callable[..., SparseAutoencoder]] = {
    "saelens": saelens.load,
    "sparsify": sparsify.load,
    "dictionary_learning": dictionary_learning.load,
}


def inspect_path(path: str | Path) -> dict[str, Any]:
    """A JSON-ready description: one SAE, or {"saes": [...]} for a folder of several."""
    path = Path(path)
    if path.is_dir() and format_of(path) is None:
        inner = hookpoint_folders(path)
        if inner:
            return {"path": str(path), "saes": [describe(folder) for folder in inner.values()]}
    return describe(path)


def describe(path: Path) -> dict[str, Any]:
    """One SAE's description; `usable` false, with `reason`, when glossator refuses it."""
    try:
        fmt, target = detect_format(path)
    except SAEError as error:
        return {"path": str(path), "format": None, "usable": False, "reason": str(error)}
    out: dict[str, Any] = {"path": str(path), "format": fmt, **_from_config(fmt, target)}
    out.update(usable=True, reason=None)
    try:
        sae = READERS[fmt](target)
    except SAEError as error:
        out.update(usable=False, reason=str(error))
        return out
    try:
        hookpoint = _resolved(sae.cfg.hookpoint or sae.cfg.metadata.get("hook_name"))
        if sae.cfg.output_hookpoint is None:
            sae.cfg.output_hookpoint = _resolved(sae.cfg.metadata.get("hook_name_out"))
    except HookNameNeedsModelError as error:  # a module's output: depends on the model
        out.update(_from_sae(sae, None), reason=f"usable only with some models: {error}")
        return out
    except UnknownHookNameError as error:
        out.update(usable=False, reason=str(error))
        return out
    out.update(_from_sae(sae, hookpoint))
    if hookpoint is None:
        out["reason"] = (
            "usable, but the files record no hookpoint: set GLOSSATOR_HOOKPOINT to the one "
            "it was trained on"
        )
    return out


def _resolved(recorded: Any) -> str | None:
    return resolve_hook_name(str(recorded)) if recorded is not None else None


def _from_sae(sae: SparseAutoencoder, hookpoint: str | None) -> dict[str, Any]:
    cfg = sae.cfg
    threshold = sae.tensors().get("threshold")
    threshold = None if threshold is None else threshold.detach()
    folded = {
        key: value
        for key, value in {
            **cfg.metadata,
            **cfg.metadata.get("dictionary_learning", {}),
        }.items()
        if key in ("folded_norm_scaling_factor", "decoder_norms_folded")
    }
    return {
        "glossator_architecture": cfg.architecture,
        "hookpoint": hookpoint,
        "hook_name": hook_name_from_hookpoint(hookpoint),
        "output_hookpoint": cfg.output_hookpoint,
        "output_hook_name": hook_name_from_hookpoint(cfg.output_hookpoint),
        "d_in": cfg.d_in,
        "d_out": sae.d_out,
        "width": cfg.d_sae,
        "k": cfg.k,
        "matryoshka_widths": cfg.matryoshka_widths,
        "threshold": None
        if threshold is None
        else {"min": float(threshold.min()), "max": float(threshold.max())},
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "rescale_acts_by_decoder_norm": cfg.rescale_acts_by_decoder_norm,
        "folded_on_load": folded or None,
        "model_name": cfg.model_name,
        "dtype": cfg.dtype,
    }


def _from_config(fmt: str, target: Path) -> dict[str, Any]:
    """What the config says, read without the weights (fields it lacks are None)."""
    if fmt == "saelens":
        cfg = json_or_empty(target / saelens.CFG_FILE)
        meta = as_object(cfg.get("metadata"))
        kwargs = as_object(cfg.get("activation_fn_kwargs"))
        recorded = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
        return {
            "architecture": cfg.get("architecture") or cfg.get("activation_fn_str") or "standard",
            "recorded_hook_name": recorded,
            "d_in": cfg.get("d_in"),
            "width": cfg.get("d_sae"),
            "k": cfg.get("k") or kwargs.get("k"),
            "normalization": _saelens_normalization(cfg, target),
            "model_name": meta.get("model_name") or cfg.get("model_name"),
        }
    if fmt == "sparsify":
        cfg = json_or_empty(target / sparsify.CFG_FILE)
        shape = _shape(target / sparsify.WEIGHTS_FILE, "encoder.weight")
        flags = [k for k in ("transcode", "skip_connection", *sparsify.UNSUPPORTED) if cfg.get(k)]
        return {
            "architecture": "+".join([str(cfg.get("activation", "topk")), *flags]),
            "recorded_hook_name": target.name,
            "d_in": cfg.get("d_in") or (shape[1] if shape else None),
            "width": shape[0] if shape else None,
            "k": cfg.get("k"),
            "normalization": "none",
        }
    trainer = as_object(json_or_empty(dictionary_learning.config_path_for(target)).get("trainer"))
    return {
        "architecture": trainer.get("dict_class"),
        "recorded_hook_name": trainer.get("submodule_name"),
        "d_in": trainer.get("activation_dim"),
        "width": trainer.get("dict_size"),
        "k": trainer.get("k"),
        "normalization": "none",
        "model_name": trainer.get("lm_name"),
    }


def _saelens_normalization(cfg: dict[str, Any], folder: Path) -> str:
    norm = cfg.get("normalize_activations") or "none"
    if norm is True:  # pre-6.0 configs wrote a boolean
        norm = "expected_average_only_in"
    if norm is False:
        norm = "none"
    scaler = folder / saelens.SCALER_FILE
    if norm == "expected_average_only_in" and scaler.is_file():
        factor = json_or_empty(scaler).get("scaling_factor")
        return f"{norm} (scaling_factor {factor} in {saelens.SCALER_FILE})"
    return str(norm)


def _shape(path: Path, name: str) -> list[int] | None:
    """A tensor's shape from a safetensors header, without reading the tensor."""
    try:
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            return list(f.get_slice(name).get_shape()) if name in names else None
    except (SafetensorError, OSError, ValueError):  # the reader says what is wrong
        return None
