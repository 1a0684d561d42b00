"""EleutherAI sparsify folders (`cfg.json` + `sae.safetensors`), read-only.

A sparsify SparseCoder encodes top_k(ReLU(encoder(x - b_dec))) and decodes
acts @ W_dec + b_dec, with tensors encoder.weight [d_sae, d_in], encoder.bias [d_sae],
W_dec [d_sae, d_in], b_dec [d_in]: our "topk" with apply_b_dec_to_input (ReLU and top-k
commute, so the kept values are the same); transcoders (`transcode`, `skip_connection`)
are read as sae/architectures/transcoder.py's TopK ones; `activation: "groupmax"` keeps
the largest of each of k equal groups instead (our "groupmax"). A training run saves one
such folder per hookpoint, named after it ("layers.6"), next to the run's config.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from sae.base import SAEError, SparseAutoencoder
from sae.formats import (
    as_int,
    assemble,
    check_d_in,
    check_file_tensors,
    dtype_name,
    make_config,
    parse_dtype,
    read_json,
    read_safetensors,
    require,
)

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
UNSUPPORTED = {
    "signed": "signed top-k (by absolute value)",
    "embed_skip": "a skip connection from the embeddings",
    "gram_lookup": "an n-gram lookup table subtracted from its input",
}
_HOOKPOINT = re.compile(r"(?:.*\.)?(?:layers|h|blocks)\.(\d+)(?:\.(mlp|self_attn|attn|attention))?")


def hookpoint_from_sparsify(name: str) -> str | None:
    """Our hookpoint for a sparsify hookpoint (a module path such as "layers.6.mlp")."""
    match = _HOOKPOINT.fullmatch(name)
    if match is None:
        return None
    site = match.group(2)
    suffix = "" if site is None else ".mlp" if site == "mlp" else ".attn"
    return f"layers.{match.group(1)}{suffix}"


def load(
    folder: Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    expected_d_in: int | None = None,
) -> SparseAutoencoder:
    cfg_path = folder / CFG_FILE
    raw = read_json(cfg_path, "a sparsify folder needs cfg.json next to sae.safetensors")
    for key, what in UNSUPPORTED.items():
        if raw.get(key):
            raise SAEError(
                f"{cfg_path}: {key}=true ({what}) is not supported; glossator reads plain "
                "sparse autoencoders only"
            )
    activation = raw.get("activation", "topk")
    if activation not in ("topk", "groupmax"):
        raise SAEError(
            f"{cfg_path}: activation {activation!r} is not supported; 'topk' and 'groupmax' are"
        )
    k = as_int(require(raw, "k", cfg_path), "k", cfg_path)
    architecture, hookpoint, output = _kind(raw, activation, folder.name, cfg_path)
    if raw.get("d_in") is not None:  # fail before reading the weights when we can
        d_in_cfg = as_int(raw["d_in"], "d_in", cfg_path)
        check_d_in(d_in_cfg, expected_d_in, hookpoint or folder.name, cfg_path)
    weights_path = folder / WEIGHTS_FILE
    weights = read_safetensors(weights_path, "re-save the SAE or download it again")
    encoder = weights.get("encoder.weight")
    if encoder is None or encoder.dim() != 2:
        shape = None if encoder is None else list(encoder.shape)
        raise SAEError(
            f"{weights_path}: 'encoder.weight' [d_sae, d_in] is missing or has shape {shape}"
        )
    d_sae, d_in = encoder.shape
    _check_sizes(raw, d_in, d_sae, cfg_path)
    check_d_in(d_in, expected_d_in, hookpoint or folder.name, cfg_path)
    shapes = {
        "encoder.weight": (d_sae, d_in),
        "encoder.bias": (d_sae,),
        "W_dec": (d_sae, d_in),
        "b_dec": (d_in,),
    }
    if raw.get("skip_connection"):
        shapes["W_skip"] = (d_in, d_in)
    check_file_tensors(weights, shapes, weights_path, "a sparsify sparse autoencoder")
    target = parse_dtype(dtype if dtype is not None else encoder.dtype, cfg_path)
    cfg = make_config(
        cfg_path,
        architecture=architecture,
        d_in=d_in,
        d_sae=d_sae,
        k=k,
        apply_b_dec_to_input=not raw.get("transcode"),  # SparseCoder.encode
        hookpoint=hookpoint,
        output_hookpoint=output,
        model_name=_run_model_name(folder),
        dtype=dtype_name(target),
        metadata={"sparsify": {"hookpoint": folder.name, "config": raw}},
    )
    tensors = {
        "W_enc": encoder.T,
        "b_enc": weights["encoder.bias"],
        "W_dec": weights["W_dec"],
        "b_dec": weights["b_dec"],
    }
    if "W_skip" in weights:
        tensors["W_skip"] = weights["W_skip"]
    return assemble(cfg, tensors, weights_path, device=device, dtype=target)


def _kind(
    raw: dict[str, Any], activation: str, name: str, source: Path
) -> tuple[str, str | None, str | None]:
    """(architecture, input hookpoint, output hookpoint) of a SparseCoder.

    A transcoder (transcode=true) on an MLP ("layers.6.mlp") reads the MLP's input,
    layers.6.mlp_in, and predicts its output, layers.6.mlp; skip_connection adds
    x @ W_skip.T to the output (SparseCoder.forward), with or without transcode.
    """
    hookpoint = hookpoint_from_sparsify(name)
    transcode, skip = bool(raw.get("transcode")), bool(raw.get("skip_connection"))
    if not (transcode or skip):
        return activation, hookpoint, None
    if activation != "topk":
        raise SAEError(f"{source}: a {activation!r} transcoder is not supported; only 'topk'")
    architecture = "topk_skip_transcoder" if skip else "topk_transcoder"
    if not transcode:
        return architecture, hookpoint, hookpoint
    if hookpoint is None or not hookpoint.endswith(".mlp"):
        raise SAEError(
            f"{source}: a transcoder on {name!r}; glossator reads transcoders of an MLP "
            "(a folder named like layers.6.mlp), whose input and output it can hook"
        )
    return architecture, f"{hookpoint}_in", hookpoint


def _check_sizes(raw: dict[str, Any], d_in: int, d_sae: int, source: Path) -> None:
    if raw.get("d_in") is not None and as_int(raw["d_in"], "d_in", source) != d_in:
        raise SAEError(f"{source}: d_in={raw['d_in']} but encoder.weight has d_in={d_in}")
    num_latents = as_int(raw.get("num_latents") or 0, "num_latents", source)
    expansion = raw.get("expansion_factor")
    wanted = num_latents or (
        d_in * as_int(expansion, "expansion_factor", source) if expansion else 0
    )
    if wanted and wanted != d_sae:
        raise SAEError(
            f"{source}: the config asks for {wanted} latents (num_latents/expansion_factor) but "
            f"encoder.weight has {d_sae}"
        )


def _run_model_name(folder: Path) -> str | None:
    """The model named in the training run's config.json next to the folder, if any."""
    try:
        run = json.loads((folder.parent / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    model = run.get("model") if isinstance(run, dict) else None
    return model if isinstance(model, str) else None
