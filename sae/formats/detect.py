"""Which format an SAE path holds, judged by what its files say, and which SAE of a
folder that holds one per hookpoint (a sparsify run, a folder of SAELens SAEs) to read.

    SAELens             cfg.json + sae_weights.safetensors
    sparsify            cfg.json + sae.safetensors; a run folder holds one per hookpoint
                        (layers.6/, layers.6.mlp/) beside its config.json, state.pt,
                        optimizer_*.pt and lr_scheduler_*.pt (training state, no SAE)
    dictionary_learning ae.pt (or checkpoints/ae_<step>.pt) + config.json with "trainer"

Messages say what to set on the command line (GLOSSATOR_SAE, GLOSSATOR_HOOKPOINT), since
that is where most paths come from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sae.base import SAEError
from sae.formats import dictionary_learning, saelens, sparsify
from sae.formats.saelens_names import hookpoint_from_hook_name

FORMATS = ("saelens", "sparsify", "dictionary_learning")
EXPECTED = (
    "expected one of: cfg.json + sae_weights.safetensors (SAELens), cfg.json + "
    "sae.safetensors (sparsify), ae.pt + config.json (dictionary_learning)"
)
# What sparsify's Trainer._checkpoint writes beside the SAE folders: no SAE weights.
_SPARSIFY_STATE = re.compile(r"state|rank_\d+_state|optimizer_\d+|lr_scheduler_\d+")


def detect_format(path: str | Path, hookpoint: str | None = None) -> tuple[str, Path]:
    """(format name, the folder or file its reader takes) for the SAE at `path`.

    `hookpoint` (glossator's name, e.g. "layers.6") picks the SAE of a folder that holds
    one per hookpoint; it is ignored for a path that holds a single SAE.
    """
    path = Path(path)
    if not path.exists():
        raise SAEError(f"{path} does not exist; give the folder that holds the SAE's files")
    if path.is_file():
        return _detect_file(path, hookpoint)
    found = format_of(path)
    if found is not None:
        return found
    _refuse_incomplete(path)
    inner = hookpoint_folders(path)
    if inner:
        return _pick(path, inner, hookpoint)
    raise SAEError(f"no SAE found in {path}; {EXPECTED}")


def format_of(folder: Path) -> tuple[str, Path] | None:
    """The format of a folder holding one SAE's files, or None."""
    if (folder / saelens.WEIGHTS_FILE).is_file():
        return "saelens", folder
    if (folder / sparsify.WEIGHTS_FILE).is_file():
        return "sparsify", folder
    if (folder / dictionary_learning.AE_FILE).is_file():
        return "dictionary_learning", folder / dictionary_learning.AE_FILE
    return None


def hookpoint_folders(folder: Path) -> dict[str, Path]:
    """{label: folder} of the SAE folders directly inside `folder`, labelled by the
    hookpoint each was trained on (glossator's name) or else by the folder's name."""
    out: dict[str, Path] = {}
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        found = format_of(child)
        if found is not None:
            out.setdefault(hookpoint_of(found[0], child) or child.name, child)
    return out


def hookpoint_of(fmt: str, folder: Path) -> str | None:
    """Where the SAE in `folder` reads, in glossator's names, from its files alone."""
    if fmt == "sparsify":
        return sparsify.hookpoint_from_sparsify(folder.name)
    config = json_or_empty(folder / (saelens.CFG_FILE if fmt == "saelens" else "config.json"))
    if fmt == "saelens":
        meta = as_object(config.get("metadata"))
        name = meta.get("hook_name") or config.get("hook_name") or config.get("hook_point")
        return hookpoint_from_hook_name(name) if isinstance(name, str) else None
    trainer = as_object(config.get("trainer"))
    return dictionary_learning.hookpoint_from_submodule(trainer.get("submodule_name"))


def _pick(path: Path, inner: dict[str, Path], hookpoint: str | None) -> tuple[str, Path]:
    labels = ", ".join(inner)
    first = next(iter(inner))
    chosen = [f for label, f in inner.items() if hookpoint in (label, f.name)]
    if chosen:
        found = format_of(chosen[0])
        assert found is not None  # hookpoint_folders keeps only SAE folders
        return found
    if hookpoint is not None:
        raise SAEError(
            f"{path} holds one SAE per hookpoint ({labels}), none for hookpoint {hookpoint}; "
            f"set GLOSSATOR_HOOKPOINT to one of them (e.g. GLOSSATOR_HOOKPOINT={first}), or "
            f"GLOSSATOR_SAE to the SAE's own folder (e.g. GLOSSATOR_SAE={inner[first]})"
        )
    raise SAEError(
        f"{path} holds one SAE per hookpoint ({labels}); choose one with "
        f"GLOSSATOR_HOOKPOINT={first} (keeping GLOSSATOR_SAE={path}), or set GLOSSATOR_SAE "
        f"to the SAE's own folder, e.g. GLOSSATOR_SAE={inner[first]}"
    )


def _detect_file(path: Path, hookpoint: str | None) -> tuple[str, Path]:
    if path.name in (saelens.CFG_FILE, saelens.WEIGHTS_FILE, sparsify.WEIGHTS_FILE):
        return detect_format(path.parent, hookpoint)
    if path.name == dictionary_learning.CONFIG_FILE and "trainer" in json_or_empty(path):
        return detect_format(path.parent, hookpoint)
    if path.suffix == ".pt":
        return _detect_pt(path)
    raise SAEError(f"{path} is not an SAE file; give the SAE's folder ({EXPECTED})")


def _detect_pt(path: Path) -> tuple[str, Path]:
    """A .pt file is a dictionary_learning checkpoint when its config.json says so; a
    sparsify run's training-state files hold no SAE and say where its SAEs are."""
    config = json_or_empty(dictionary_learning.config_path_for(path))
    if isinstance(config.get("trainer"), dict):
        return "dictionary_learning", path
    inner = hookpoint_folders(path.parent)
    if _SPARSIFY_STATE.fullmatch(path.stem) and (isinstance(config.get("sae"), dict) or inner):
        where = ""
        if inner:
            first = next(iter(inner))
            where = (
                f"; the run's SAEs are the folders beside it ({', '.join(inner)}): set "
                f"GLOSSATOR_SAE={path.parent} and GLOSSATOR_HOOKPOINT={first}, or "
                f"GLOSSATOR_SAE={inner[first]}"
            )
        raise SAEError(
            f"{path} is a sparsify training-state file (optimizer and step counts, no SAE "
            f"weights){where}"
        )
    if config:
        raise SAEError(
            f"{dictionary_learning.config_path_for(path)} has no 'trainer' object, so "
            f"{path.name} is not a dictionary_learning checkpoint; {EXPECTED}"
        )
    return "dictionary_learning", path  # its reader says config.json is missing


def _refuse_incomplete(folder: Path) -> None:
    """A folder with a config but no weights: say which format's weights are missing."""
    cfg = json_or_empty(folder / saelens.CFG_FILE)
    if (folder / saelens.CFG_FILE).is_file():
        theirs = (
            f"{sparsify.WEIGHTS_FILE} (a sparsify config)"
            if "d_sae" not in cfg and any(k in cfg for k in ("expansion_factor", "num_latents"))
            else f"{saelens.WEIGHTS_FILE} (an SAELens config)"
            if "d_sae" in cfg
            else f"{saelens.WEIGHTS_FILE} (SAELens) or {sparsify.WEIGHTS_FILE} (sparsify)"
        )
        raise SAEError(f"{folder} has cfg.json but not {theirs}; the weights file is missing")
    config = json_or_empty(folder / dictionary_learning.CONFIG_FILE)
    checkpoints = sorted((folder / "checkpoints").glob("ae_*.pt"))
    if isinstance(config.get("trainer"), dict):
        hint = (
            f"; pass one of its checkpoints, e.g. GLOSSATOR_SAE={checkpoints[-1]}"
            if checkpoints
            else ""
        )
        raise SAEError(
            f"{folder} has a dictionary_learning config.json but no {dictionary_learning.AE_FILE}"
            f"{hint}"
        )


def json_or_empty(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or {} when it is absent or unreadable (detection only:
    the format's reader reports a bad file precisely)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def as_object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
