"""On-disk formats of sparse dictionaries: SAELens (ours), sparsify, dictionary_learning.

Each format module turns its files into an `SAEConfig` plus a dict of tensors under our
names; `assemble` then checks every tensor against a freshly built SAE of that config
(names, shapes, finite values) before anything is installed, so a bad file raises an
`SAEError` and never yields a half-loaded dictionary. `sae.loading` picks the format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from sae.base import SAEConfig, SAEError, SparseAutoencoder
from sae.registry import architectures, build_sae

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def parse_dtype(value: str | torch.dtype, source: Path | str) -> torch.dtype:
    """A floating torch dtype from "float32", "torch.bfloat16", torch.float16, ..."""
    if isinstance(value, torch.dtype):
        if value not in DTYPES.values():
            raise SAEError(f"{source}: unsupported dtype {value}; use one of {', '.join(DTYPES)}")
        return value
    name = str(value).removeprefix("torch.")
    if name not in DTYPES:
        raise SAEError(f"{source}: unsupported dtype {value!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """ "float32" for torch.float32 (the spelling SAELens and SAEConfig use)."""
    return str(dtype).removeprefix("torch.")


def read_json(path: Path, fix: str) -> dict[str, Any]:
    """The JSON object in `path`; `fix` tells the user what to do when it is unusable."""
    if not path.is_file():
        raise SAEError(f"{path} is missing; {fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SAEError(f"{path} is not readable JSON ({error}); {fix}") from error
    if not isinstance(data, dict):
        raise SAEError(f"{path} must hold a JSON object, found {type(data).__name__}; {fix}")
    return data


def require(cfg: Mapping[str, Any], key: str, source: Path) -> Any:
    if key not in cfg or cfg[key] is None:
        raise SAEError(f"{source} lacks the required field {key!r}")
    return cfg[key]


def as_int(value: Any, name: str, source: Path) -> int:
    """An integer field; integral floats (SAELens writes BatchTopK's k as 32.0) are fine."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SAEError(f"{source}: {name} must be an integer, found {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise SAEError(f"{source}: {name} must be an integer, found {value!r}")
    return int(value)


def read_safetensors(path: Path, fix: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise SAEError(f"{path} is missing; {fix}")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise SAEError(f"{path} is not a readable safetensors file ({error}); {fix}") from error


def check_file_tensors(
    tensors: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], source: Path, what: str
) -> None:
    """Exactly the tensors of `shapes` (file names), with those shapes and finite values."""
    missing = sorted(set(shapes) - set(tensors))
    unexpected = sorted(set(tensors) - set(shapes))
    if missing or unexpected:
        parts = [f"missing {missing}"] if missing else []
        parts += [f"unexpected {unexpected}"] if unexpected else []
        raise SAEError(
            f"{source}: tensors {' and '.join(parts)}; {what} holds exactly {sorted(shapes)}. "
            "The file is incomplete or was written by another class."
        )
    for name, shape in shapes.items():
        value = tensors[name]
        if not isinstance(value, torch.Tensor):
            raise SAEError(f"{source}: {name!r} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(shape):
            raise SAEError(
                f"{source}: tensor {name!r} has shape {list(value.shape)}, expected "
                f"{list(shape)}; the file is damaged or its config does not match its weights"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise SAEError(
                f"{source}: tensor {name!r} holds {bad} NaN/Inf values; the dictionary "
                "diverged in training or the file is damaged. Use another checkpoint."
            )


def make_config(source: Path, **fields: Any) -> SAEConfig:
    try:
        return SAEConfig(**fields)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise SAEError(f"{source}: invalid SAE configuration ({problems})") from error


def check_d_in(d_in: int, expected_d_in: int | None, where: str | None, source: Path | str) -> None:
    """Refuse an SAE whose input width is not the model's width at its hookpoint."""
    if expected_d_in is None or d_in == expected_d_in:
        return
    at = f"hookpoint {where}" if where else "the chosen hookpoint"
    raise SAEError(
        f"{source}: the SAE reads vectors of width d_in={d_in}, but the model's {at} has "
        f"width {expected_d_in}; this dictionary was trained on another model or hookpoint. "
        "Pick the SAE trained for this model and hookpoint, or the matching model."
    )


def assemble(
    cfg: SAEConfig,
    tensors: Mapping[str, torch.Tensor],
    source: Path,
    *,
    device: str | torch.device,
    dtype: torch.dtype,
) -> SparseAutoencoder:
    """An SAE of `cfg` holding `tensors` (our names), after checking every one of them.

    Nothing is installed until all names, shapes and values have been checked.
    """
    architectures()  # import the architecture modules outside the meta-device context
    try:
        with torch.device("meta"):  # no memory for weights that are replaced anyway
            sae = build_sae(cfg)
    except SAEError as error:
        raise SAEError(f"{source}: {error}") from error
    expected = sae.tensors()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected}")
        raise SAEError(
            f"{source}: {' and '.join(parts)} for a {cfg.architecture!r} SAE, which has "
            f"exactly {sorted(expected)}; the file is incomplete or is not this architecture"
        )
    for name, ref in expected.items():
        _check_tensor(sae, name, ref, tensors[name], source)
    for name, ref in expected.items():
        value = tensors[name].to(
            device=device, dtype=dtype if ref.is_floating_point() else ref.dtype
        )
        _install(sae, name, value.contiguous())
    return sae


def _allowed_shapes(sae: SparseAutoencoder, name: str, ref: torch.Tensor) -> list[tuple[int, ...]]:
    shapes = [tuple(ref.shape)]
    # BatchTopK-style dictionaries take a scalar or a per-feature threshold (set_threshold_).
    if name == "threshold" and hasattr(sae, "set_threshold_"):
        shapes = [(), (sae.d_sae,)]
    return shapes


def _check_tensor(
    sae: SparseAutoencoder, name: str, ref: torch.Tensor, value: torch.Tensor, source: Path
) -> None:
    shapes = _allowed_shapes(sae, name, ref)
    if tuple(value.shape) not in shapes:
        wanted = " or ".join(str(list(s)) for s in shapes)
        raise SAEError(
            f"{source}: tensor {name!r} has shape {list(value.shape)}, expected {wanted} "
            f"(d_in={sae.d_in}, d_sae={sae.d_sae}); the file is damaged or its config "
            "does not match its weights"
        )
    if ref.is_floating_point() != value.is_floating_point():
        raise SAEError(f"{source}: tensor {name!r} has dtype {value.dtype}, expected {ref.dtype}")
    if value.is_floating_point():
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            raise SAEError(
                f"{source}: tensor {name!r} holds {int(bad.sum())} NaN/Inf values; the "
                "dictionary diverged in training or the file is damaged. Use another checkpoint."
            )


def _install(sae: SparseAutoencoder, name: str, value: torch.Tensor) -> None:
    owner_path, _, attr = name.rpartition(".")
    owner = sae.get_submodule(owner_path) if owner_path else sae
    if attr in owner._parameters:
        old = owner._parameters[attr]
        requires_grad = True if old is None else old.requires_grad
        owner._parameters[attr] = nn.Parameter(value, requires_grad=requires_grad)
    else:
        owner._buffers[attr] = value
