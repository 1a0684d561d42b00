"""dictionary_learning (Marks et al.) checkpoints: `ae.pt` + `config.json`, read-only.

`ae.pt` is a state dict read with `torch.load(weights_only=True)`; config.json's
"trainer" names the class (`dict_class`) and its sizes. Each class maps exactly onto one
of ours (nn.Linear weights are stored [out, in], hence the transposes):

    AutoEncoder             relu(encoder(x - bias)), decoder(f) + bias    -> standard
    AutoEncoderNew          relu(encoder(x)), decoder(f), biased decoder   -> standard (x as is)
    AutoEncoderTopK         top-k of relu(encoder(x - b_dec))              -> topk
    BatchTopKSAE            relu(encoder(x - b_dec)) above `threshold`     -> batchtopk
    MatryoshkaBatchTopKSAE  the same with W_enc/W_dec and group_sizes      -> matryoshka
    JumpReluAutoEncoder     relu(pre * (pre > threshold)), x as is         -> jumprelu
    GatedAutoEncoder        gate and magnitude paths sharing `encoder`     -> gated

An AutoEncoder is read as the library's own `utils.load_dictionary` reads it:
`AutoEncoder.from_pretrained` renormalises decoder columns to unit norm and multiplies
the encoder's rows and bias by the old norms (trainers after the April update leave the
norms free), so reconstructions are unchanged and feature activations are the library's.
Other classes are taken as saved, as the library does.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
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
    require,
)

AE_FILE = "ae.pt"
CONFIG_FILE = "config.json"
Tensors = dict[str, torch.Tensor]


@dataclass
class Mapped:
    """One dictionary_learning class read into our terms."""

    architecture: str
    tensors: Tensors
    apply_b_dec_to_input: bool = True
    fields: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def _autoencoder(s: Tensors, d_in: int, d_sae: int) -> Mapped:
    t = {"W_enc": s["encoder.weight"].T, "b_enc": s["encoder.bias"]}
    t |= {"W_dec": s["decoder.weight"].T, "b_dec": s["bias"]}
    return Mapped("standard", t, notes=_unit_decoder_norms(t))


def _unit_decoder_norms(t: Tensors) -> dict[str, Any]:
    """Fold decoder row norms n into the encoder, in place, as dictionary_learning's
    `AutoEncoder.normalize_decoder` does on load: W_dec / n, W_enc * n, b_enc * n.

    Like the library, nothing changes when all norms are already 1 (torch.allclose).
    Zero rows (the library fails on them) keep their scale: they decode to nothing.
    """
    norms = t["W_dec"].float().norm(dim=-1)
    if torch.allclose(norms, torch.ones_like(norms)):
        return {}
    n = torch.where(norms > 0, norms, 1).double()

    def scaled(name: str, factor: torch.Tensor) -> torch.Tensor:
        return (t[name].double() * factor).to(t[name].dtype)

    t["W_dec"] = scaled("W_dec", 1 / n[:, None])
    t["W_enc"] = scaled("W_enc", n[None, :])
    t["b_enc"] = scaled("b_enc", n)
    return {"decoder_norms_folded": {"min": float(norms.min()), "max": float(norms.max())}}


def _autoencoder_new(s: Tensors, d_in: int, d_sae: int) -> Mapped:
    t = {"W_enc": s["encoder.weight"].T, "b_enc": s["encoder.bias"]}
    t |= {"W_dec": s["decoder.weight"].T, "b_dec": s["decoder.bias"]}
    return Mapped("standard", t, apply_b_dec_to_input=False)


def _linear_topk(architecture: str) -> Callable[[Tensors, int, int], Mapped]:
    def read(s: Tensors, d_in: int, d_sae: int) -> Mapped:
        t = {"W_enc": s["encoder.weight"].T, "b_enc": s["encoder.bias"]}
        t |= {"W_dec": s["decoder.weight"].T, "b_dec": s["b_dec"]}
        mapped = Mapped(architecture, t, fields={"k": int(s["k"])})
        if architecture == "topk":  # the per-row top-k ignores the threshold buffer
            mapped.notes["threshold"] = float(s["threshold"])
        else:
            t["threshold"] = s["threshold"]
        return mapped

    return read


def _matryoshka(s: Tensors, d_in: int, d_sae: int) -> Mapped:
    t = {name: s[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}
    widths = [int(w) for w in s["group_sizes"].cumsum(0).tolist()]
    fields = {"k": int(s["k"]), "matryoshka_widths": widths}
    return Mapped("matryoshka", t, fields=fields, notes={"group_sizes": s["group_sizes"].tolist()})


def _jumprelu(s: Tensors, d_in: int, d_sae: int) -> Mapped:
    t = {name: s[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}
    return Mapped("jumprelu", t, apply_b_dec_to_input=False)


def _gated(s: Tensors, d_in: int, d_sae: int) -> Mapped:
    t = {"W_enc": s["encoder.weight"].T, "W_dec": s["decoder.weight"].T, "b_dec": s["decoder_bias"]}
    t |= {"b_gate": s["gate_bias"], "r_mag": s["r_mag"], "b_mag": s["mag_bias"]}
    return Mapped("gated", t)


def _shapes(dict_class: str, d_in: int, d_sae: int, n_groups: int) -> dict[str, tuple[int, ...]]:
    linear = {"encoder.weight": (d_sae, d_in), "decoder.weight": (d_in, d_sae)}
    params = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    buffers: dict[str, tuple[int, ...]] = {"k": (), "threshold": ()}
    return {
        "AutoEncoder": {**linear, "encoder.bias": (d_sae,), "bias": (d_in,)},
        "AutoEncoderNew": {**linear, "encoder.bias": (d_sae,), "decoder.bias": (d_in,)},
        "AutoEncoderTopK": {**linear, "encoder.bias": (d_sae,), "b_dec": (d_in,), **buffers},
        "BatchTopKSAE": {**linear, "encoder.bias": (d_sae,), "b_dec": (d_in,), **buffers},
        "MatryoshkaBatchTopKSAE": {**params, **buffers, "group_sizes": (n_groups,)},
        "JumpReluAutoEncoder": {**params, "threshold": (d_sae,)},
        "GatedAutoEncoder": {
            **linear,
            "decoder_bias": (d_in,),
            "r_mag": (d_sae,),
            "gate_bias": (d_sae,),
            "mag_bias": (d_sae,),
        },
    }[dict_class]


READERS: dict[str, Callable[[Tensors, int, int], Mapped]] = {
    "AutoEncoder": _autoencoder,
    "AutoEncoderNew": _autoencoder_new,
    "AutoEncoderTopK": _linear_topk("topk"),
    "BatchTopKSAE": _linear_topk("batchtopk"),
    "MatryoshkaBatchTopKSAE": _matryoshka,
    "JumpReluAutoEncoder": _jumprelu,
    "GatedAutoEncoder": _gated,
}

_SUBMODULE = re.compile(r"(resid_post|mlp_out|attn_out)_layer_(\d+)")


def hookpoint_from_submodule(name: Any) -> str | None:
    """Our hookpoint for dictionary_learning's usual submodule names ("resid_post_layer_3")."""
    match = _SUBMODULE.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        return None
    suffix = {"resid_post": "", "mlp_out": ".mlp", "attn_out": ".attn"}[match.group(1)]
    return f"layers.{match.group(2)}{suffix}"


def config_path_for(ae_path: Path) -> Path:
    """config.json next to ae.pt, or above a run's checkpoints/ae_<step>.pt."""
    beside = ae_path.parent / CONFIG_FILE
    if not beside.is_file() and ae_path.parent.name == "checkpoints":
        return ae_path.parent.parent / CONFIG_FILE
    return beside


def load(
    ae_path: Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    expected_d_in: int | None = None,
) -> SparseAutoencoder:
    config_path = config_path_for(ae_path)
    raw = read_json(config_path, f"dictionary_learning saves config.json next to {ae_path.name}")
    trainer = raw.get("trainer")
    if not isinstance(trainer, dict):
        raise SAEError(f"{config_path} lacks the 'trainer' object that dictionary_learning writes")
    dict_class = require(trainer, "dict_class", config_path)
    if dict_class not in READERS:
        raise SAEError(
            f"{config_path}: dictionary class {dict_class!r} is not supported; supported: "
            f"{', '.join(READERS)}"
        )
    d_in = as_int(require(trainer, "activation_dim", config_path), "activation_dim", config_path)
    d_sae = as_int(require(trainer, "dict_size", config_path), "dict_size", config_path)
    hookpoint = hookpoint_from_submodule(trainer.get("submodule_name"))
    check_d_in(d_in, expected_d_in, hookpoint or trainer.get("submodule_name"), config_path)
    state = _read_state_dict(ae_path)
    groups = state.get("group_sizes")
    n_groups = groups.numel() if isinstance(groups, torch.Tensor) else 0
    shapes = _shapes(dict_class, d_in, d_sae, n_groups)
    check_file_tensors(
        state, shapes, ae_path, f"a {dict_class} with activation_dim={d_in}, dict_size={d_sae}"
    )
    mapped = READERS[dict_class](state, d_in, d_sae)
    _check_mapped(mapped, dict_class, trainer, d_sae, ae_path)
    main = mapped.tensors["W_enc"]
    target = parse_dtype(dtype if dtype is not None else main.dtype, config_path)
    metadata: dict[str, Any] = {"config": raw, "file": ae_path.name}
    if "decoder_norms_folded" in mapped.notes:
        metadata["decoder_norms_folded"] = mapped.notes.pop("decoder_norms_folded")
    if mapped.notes:
        metadata["buffers"] = mapped.notes
    cfg = make_config(
        config_path,
        architecture=mapped.architecture,
        d_in=d_in,
        d_sae=d_sae,
        apply_b_dec_to_input=mapped.apply_b_dec_to_input,
        hookpoint=hookpoint,
        model_name=trainer.get("lm_name") if isinstance(trainer.get("lm_name"), str) else None,
        dtype=dtype_name(target),
        metadata={"dictionary_learning": metadata},
        **mapped.fields,
    )
    return assemble(cfg, mapped.tensors, ae_path, device=device, dtype=target)


def _read_state_dict(path: Path) -> Tensors:
    if not path.is_file():
        raise SAEError(f"{path} is missing; dictionary_learning saves the weights as ae.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as error:
        raise SAEError(
            f"{path} is not a readable weights-only torch file ({error}); it must hold the "
            "dictionary's state dict (tensors only)"
        ) from error
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise SAEError(
            f"{path} must hold a state dict (names -> tensors), found {type(state).__name__}"
        )
    return state


def _check_mapped(
    mapped: Mapped, dict_class: str, trainer: dict[str, Any], d_sae: int, source: Path
) -> None:
    k = mapped.fields.get("k")
    if k is not None and trainer.get("k") is not None and as_int(trainer["k"], "k", source) != k:
        raise SAEError(f"{source}: buffer k={k} but config.json says k={trainer['k']}")
    widths = mapped.fields.get("matryoshka_widths")
    if widths is not None and (not widths or widths[-1] != d_sae):
        raise SAEError(
            f"{source}: group_sizes {mapped.notes['group_sizes']} do not sum to dict_size={d_sae}"
        )
    threshold = mapped.tensors.get("threshold")
    if (
        mapped.architecture in ("batchtopk", "matryoshka")
        and threshold is not None
        and float(threshold) < 0
    ):
        raise SAEError(
            f"{source}: this {dict_class} has no inference threshold yet "
            f"(threshold={float(threshold)}: training stopped before threshold_start_step), "
            "so it would encode as a dense ReLU; "
            "use a checkpoint saved later in training"
        )
