"""`load_sae` (any supported format, detected from the files) and `save_sae` (SAELens).

    sae = load_sae("path/to/folder", device="cuda", expected_d_in=576)
    save_sae(sae, "path/to/new_folder")

Formats, by the files in the folder:
    SAELens             cfg.json + sae_weights.safetensors
    sparsify            cfg.json + sae.safetensors (a training run holds one folder per
                        hookpoint: pass the hookpoint's folder)
    dictionary_learning ae.pt + config.json (or a path to an .pt checkpoint)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

from identifiers.hookpoints import UnknownHookNameError, resolve_hook_name
from sae.base import SAEConfig, SAEError, SparseAutoencoder
from sae.formats import dictionary_learning, saelens, sparsify
from sae.formats.detect import detect_format  # by content; picks a folder's hookpoint

FORMATS = ("saelens", "sparsify", "dictionary_learning")
# What save_sae may replace: an SAELens folder (sparsity.safetensors: its feature densities).
_REPLACEABLE = {saelens.CFG_FILE, saelens.WEIGHTS_FILE, "sparsity.safetensors"}


def load_sae(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    expected_d_in: int | None = None,
    hookpoint: str | None = None,
    modules: Mapping[str, str] | None = None,
) -> SparseAutoencoder:
    """The SAE stored at `path`, in eval mode, on `device`.

    hookpoint: picks the SAE of a folder that holds one per hookpoint (a sparsify run).
    modules: the model's module names whose output is exactly one of its hookpoints
    (probes.hookpoints.module_hookpoints); with them, a hook name that names a module
    ("model.layers.3.mlp") is mapped where that is exact for this model, else refused.

    dtype: the file's dtype when None, else e.g. "bfloat16" or torch.float32.
    expected_d_in: the model's width at the hookpoint the SAE will read; a different
    d_in is refused before the weights are read.
    Raises SAEError (saying what is wrong, in which file, and how to fix it) for anything
    unusable; no partially loaded SAE is ever returned.
    """
    fmt, target = detect_format(path, hookpoint)
    reader = {
        "saelens": saelens.load,
        "sparsify": sparsify.load,
        "dictionary_learning": dictionary_learning.load,
    }[fmt]
    sae = reader(target, device, dtype, expected_d_in)
    _resolve_hookpoint(sae, target, modules)
    return sae.eval()


def _resolve_hookpoint(
    sae: SparseAutoencoder, source: Path, modules: Mapping[str, str] | None
) -> None:
    """Set the SAE's hookpoints from the names its files record (ours, or SAELens'
    `hook_name` and a transcoder's `hook_name_out`), or refuse them: a dictionary must
    never read a tensor it was not trained on, so a name we cannot map is an error, never
    None that later becomes the default."""
    cfg, meta = sae.cfg, sae.cfg.metadata
    recorded = cfg.hookpoint if cfg.hookpoint is not None else meta.get("hook_name")
    if recorded is not None:
        try:
            cfg.hookpoint = resolve_hook_name(str(recorded), modules)
        except UnknownHookNameError as error:
            raise SAEError(f"{source}: the SAE was trained on an {error}") from error
    written = meta.get("hook_name_out")
    if cfg.output_hookpoint is None and written is not None:
        try:
            cfg.output_hookpoint = resolve_hook_name(str(written), modules)
        except UnknownHookNameError as error:
            raise SAEError(
                f"{source}: the transcoder writes to hook_name_out={written!r}: {error}"
            ) from error
    if modules is not None and "sparsify" in meta:
        _check_sparsify_module(cfg, str(meta["sparsify"].get("hookpoint")), source, modules)


def _check_sparsify_module(
    cfg: SAEConfig, name: str, source: Path, modules: Mapping[str, str]
) -> None:
    """sparsify hooks a module's output ("layers.6.mlp" of the base model), which is
    where glossator writes (transcoders) or reads (the rest) only if the model says so:
    on Gemma-2/3 the MLP's output is normed before the residual receives it."""
    ours = cfg.output_hookpoint or cfg.hookpoint
    if modules.get(name) != ours:
        raise SAEError(
            f"{source}: sparsify hooked the output of module {name!r}, which on this model is "
            f"not exactly glossator's {ours} (modules whose output is: "
            f"{', '.join(k for k, v in modules.items() if v == ours) or 'none'})"
        )


def save_sae(sae: SparseAutoencoder, path: str | Path) -> Path:
    """Write `sae` as an SAELens folder at `path`, atomically; returns the folder.

    The files are written into a temporary folder beside `path`, which then replaces
    `path`. An existing SAE folder there is replaced whole; a file, or a folder holding
    anything else, is refused.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SAEError(f"{path} is a file; save_sae writes a folder")
    if path.is_dir():
        others = sorted(p.name for p in path.iterdir() if p.name not in _REPLACEABLE)
        if others:
            raise SAEError(
                f"{path} exists and holds other files ({', '.join(others[:5])}); save_sae "
                "only replaces an SAE folder: choose a new folder"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        saelens.write(sae, tmp)
        _default_permissions(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            path.rename(old / path.name)
            try:
                tmp.rename(path)
            except OSError:
                (old / path.name).rename(path)  # put the previous SAE back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _default_permissions(folder: Path) -> None:
    """mkdtemp makes a 0700 folder and safetensors writes 0600 files; give the saved SAE
    the permissions any other file would get under the user's umask."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for file in folder.iterdir():
        file.chmod(0o666 & ~umask)
