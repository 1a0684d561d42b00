"""SAELens tensors into ours, for saelens.py: renamed thresholds and the scaling factors
SAELens keeps beside the weights, folded into them as SAELens itself folds them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from sae.base import SAEConfig, SAEError
from sae.formats import read_json
from sae.formats.saelens_names import AS_JUMPRELU, CFG_FILE, SCALER_FILE


def our_tensors(
    tensors: dict[str, torch.Tensor], cfg: SAEConfig, raw: dict[str, Any], source: Path
) -> dict[str, torch.Tensor]:
    """SAELens tensor names -> ours: log_threshold, topk_threshold, scaling factors."""
    tensors = dict(tensors)
    if "log_threshold" in tensors and cfg.architecture.startswith("jumprelu"):
        if "threshold" in tensors:
            raise SAEError(f"{source} holds both 'threshold' and 'log_threshold'; keep one")
        tensors["threshold"] = tensors.pop("log_threshold").double().exp()
    if "topk_threshold" in tensors and cfg.architecture in ("batchtopk", "matryoshka"):
        if "threshold" in tensors:
            raise SAEError(f"{source} holds both 'threshold' and 'topk_threshold'; keep one")
        tensors["threshold"] = tensors.pop("topk_threshold")
    threshold = tensors.get("threshold")
    if (
        raw.get("architecture") == "jumprelu"
        and cfg.architecture in AS_JUMPRELU
        and threshold is not None
        and threshold.numel() > 0
        and bool((threshold == threshold.flatten()[0]).all())
    ):
        tensors["threshold"] = threshold.flatten()[0].clone()  # our global θ, saved per feature
    for name in ("scaling_factor", "finetuning_scaling_factor"):
        if name in tensors:
            _fold_finetuning_scale(
                tensors, name, bool(raw.get("finetuning_scaling_factor")), cfg, source
            )
    return tensors


def _fold_finetuning_scale(
    tensors: dict[str, torch.Tensor], name: str, enabled: bool, cfg: SAEConfig, source: Path
) -> None:
    """Pre-6.0 SAEs decode (f * s) @ W_dec + b_dec: fold s into the rows of W_dec."""
    scale = tensors.pop(name)
    if not bool(torch.isfinite(scale).all()):
        raise SAEError(f"{source}: tensor {name!r} holds NaN/Inf values; use another checkpoint")
    if torch.allclose(scale.double(), torch.ones_like(scale, dtype=torch.float64)):
        return
    if not enabled:
        raise SAEError(
            f"{source} holds {name!r} but its cfg.json sets finetuning_scaling_factor false"
        )
    if cfg.rescale_acts_by_decoder_norm or scale.shape != (cfg.d_sae,) or "W_dec" not in tensors:
        raise SAEError(f"{source}: cannot apply {name!r} of shape {list(scale.shape)} exactly")
    w_dec = tensors["W_dec"]
    tensors["W_dec"] = (w_dec.double() * scale.double()[:, None]).to(w_dec.dtype)


def fold_normalization(
    tensors: dict[str, torch.Tensor], cfg: SAEConfig, modern: dict[str, Any], folder: Path
) -> dict[str, torch.Tensor]:
    """Fold expected_average_only_in's scaling factor s, as SAELens' trainer does at the end
    (sae_trainer.py: sae.fold_activation_norm_scaling_factor(s) before the final save).

    The SAE sees x * s and its output is divided by s; W_enc * s, W_dec / s and b_dec / s
    compute the same reconstruction on x itself. With rescale_acts_by_decoder_norm the
    decoder norms shrink by s too, so feature activations come out divided by s (TopK's
    choice of features is unchanged), as in SAELens' folded SAE; a BatchTopK threshold,
    compared with those activations, is divided by s to keep the same features active.
    A scaler file whose scaling_factor is null scaled nothing (SAELens' ActivationScaler).
    """
    if modern.get("normalize_activations") != "expected_average_only_in":
        return tensors  # none, or a run-time normalisation (SAEConfig.normalize_activations)
    scaler_path = folder / SCALER_FILE
    how = (
        "fold the norm scaling factor into the weights (SAELens: "
        "sae.fold_activation_norm_scaling_factor(s)) and save with normalize_activations='none'"
    )
    if not scaler_path.is_file():
        raise SAEError(
            f"{folder / CFG_FILE}: normalize_activations='expected_average_only_in' needs the "
            f"norm scaling factor, and {scaler_path} is absent; {how}"
        )
    factor = read_json(scaler_path, how).get("scaling_factor", 0)
    if factor is None:
        return tensors
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not math.isfinite(factor):
        raise SAEError(
            f"{scaler_path}: scaling_factor must be a finite number, found {factor!r}; {how}"
        )
    if factor <= 0:
        raise SAEError(f"{scaler_path}: scaling_factor must be positive, found {factor}; {how}")
    tensors = dict(tensors)
    ops = [("W_enc", factor), ("W_dec", 1 / factor), ("b_dec", 1 / factor)]
    if cfg.rescale_acts_by_decoder_norm:
        ops.append(("threshold", 1 / factor))
    for name, op in ops:
        if name in tensors:
            tensors[name] = (tensors[name].double() * op).to(tensors[name].dtype)
    cfg.metadata["folded_norm_scaling_factor"] = float(factor)
    return tensors
