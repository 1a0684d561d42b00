"""Writing SAELens folders (SAELens 6 configs) that SAELens' own inference loader reads.

TopK, standard, JumpReLU and gated SAEs are written under their own architecture.
BatchTopK and Matryoshka SAEs are written as SAELens writes them for inference
(sae_lens/saes/batchtopk_sae.py, `process_state_dict_for_saving_inference`, and
topk_sae.py, `_fold_norm_topk`): architecture "jumprelu", the global threshold repeated
per feature, decoder norms folded into the encoder when rescale_acts_by_decoder_norm is
set, and only JumpReLUSAEConfig's fields. At inference the two compute the same codes.
`metadata.glossator.saved_as_jumprelu` records the architecture, k and widths, so that
glossator reads the folder back as the BatchTopK/Matryoshka SAE it saved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from sae.base import SAEConfig, SAEError, SparseAutoencoder
from sae.formats import dtype_name
from sae.formats.saelens_names import (
    AS_JUMPRELU,
    CFG_FILE,
    FORMAT_VERSION,
    SAVED_AS,
    TO_SAELENS,
    TOPK_FAMILY,
    TRANSCODERS,
    WEIGHTS_FILE,
    hook_name_from_hookpoint,
    hookpoint_from_hook_name,
)


def write(sae: SparseAutoencoder, folder: Path) -> None:
    """Write cfg.json and sae_weights.safetensors into the (new, empty) `folder`."""
    cfg = sae.cfg
    if cfg.architecture not in TO_SAELENS:
        raise SAEError(
            f"cannot save a {cfg.architecture!r} SAE in SAELens format; "
            f"supported: {', '.join(sorted(TO_SAELENS))}"
        )
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in sae.tensors().items()}
    rescale = cfg.rescale_acts_by_decoder_norm
    if rescale and cfg.architecture not in ("topk", "abstopk"):  # those keep the field
        tensors = _fold_decoder_norm(tensors, cfg.architecture)  # SAELens has no such field
        rescale = False
    architecture = TO_SAELENS[cfg.architecture]
    saved_as: dict[str, Any] | None = None
    if cfg.architecture in AS_JUMPRELU:
        architecture = "jumprelu"
        threshold = tensors["threshold"]
        # SAELens: torch.ones_like(b_enc) * topk_threshold
        tensors["threshold"] = torch.ones_like(tensors["b_enc"]) * threshold.to(sae.dtype)
        saved_as = {"architecture": cfg.architecture, "k": cfg.k}
        if cfg.matryoshka_widths is not None:
            saved_as["matryoshka_widths"] = list(cfg.matryoshka_widths)
    out: dict[str, Any] = dict(
        architecture=architecture,
        d_in=cfg.d_in,
        d_sae=cfg.d_sae,
        dtype=dtype_name(sae.dtype),
        device="cpu",
        apply_b_dec_to_input=cfg.apply_b_dec_to_input,
        normalize_activations=cfg.normalize_activations,
        reshape_activations="none",
        metadata=_metadata_out(cfg, saved_as),
    )
    if architecture in TOPK_FAMILY:
        out.update(k=cfg.k, rescale_acts_by_decoder_norm=rescale)
    if architecture in TRANSCODERS:
        out["d_out"] = sae.d_out
    for key, value in cfg.metadata.get("saelens", {}).get("extra", {}).items():
        out.setdefault(key, value)
    try:
        text = json.dumps(out, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as error:
        raise SAEError(
            f"cannot save: the SAE's config is not plain JSON ({error}); keep only strings, "
            "numbers, booleans, lists and dicts in cfg.metadata"
        ) from error
    save_file(tensors, str(folder / WEIGHTS_FILE))
    (folder / CFG_FILE).write_text(text, encoding="utf-8")


def _metadata_out(cfg: SAEConfig, saved_as: dict[str, Any] | None) -> dict[str, Any]:
    meta = dict(cfg.metadata)
    if saved_as is not None:
        meta[SAVED_AS] = saved_as
    preserved = meta.pop("saelens", {})
    out = dict(preserved.get("metadata", {}))
    out.update(model_name=cfg.model_name, hook_name=_hook_name(meta, "hook_name", cfg.hookpoint))
    if cfg.architecture in TRANSCODERS:
        out["hook_name_out"] = _hook_name(meta, "hook_name_out", cfg.output_hookpoint)
    out.setdefault("sae_lens_version", FORMAT_VERSION)
    if meta:
        out["glossator"] = meta
    return out


def _hook_name(meta: dict[str, Any], key: str, hookpoint: str | None) -> str | None:
    """The TransformerLens name to write for `hookpoint`: the file's original one (popped
    from `meta`) when it still names it; our hookpoint goes into `meta` when no name does."""
    original = meta.pop(key, None)
    if original is not None and (
        hookpoint is None or hookpoint_from_hook_name(original) == hookpoint
    ):
        name = original
    else:
        name = hook_name_from_hookpoint(hookpoint)
    if hookpoint_from_hook_name(name) != hookpoint:
        meta["hookpoint" if key == "hook_name" else "output_hookpoint"] = hookpoint
    return name


def _fold_decoder_norm(
    tensors: dict[str, torch.Tensor], architecture: str
) -> dict[str, torch.Tensor]:
    """The same function without rescale_acts_by_decoder_norm, for SAELens' standard,
    jumprelu and gated SAEs (which lack the field; BatchTopK is saved as jumprelu): with
    n = ||W_dec[i]||, the rescaled pre-activations are those of W_enc * n, b_enc * n
    (gated: r_mag + log n, b_mag * n), and f / n @ W_dec = f @ (W_dec / n). JumpReLU
    thresholds already apply to them."""
    tensors = dict(tensors)
    norms = tensors["W_dec"].double().norm(dim=-1)
    if not bool((norms > 0).all()):
        raise SAEError(
            "cannot save: rescale_acts_by_decoder_norm is set and some decoder rows are zero"
        )

    def scaled(name: str, factor: torch.Tensor) -> None:
        tensors[name] = (tensors[name].double() * factor).to(tensors[name].dtype)

    scaled("W_dec", 1 / norms[:, None])
    if architecture == "gated":
        scaled("b_mag", norms)
        tensors["r_mag"] = (tensors["r_mag"].double() + norms.log()).to(tensors["r_mag"].dtype)
    else:
        scaled("W_enc", norms[None, :])
        scaled("b_enc", norms)
    return tensors
