"""Training checkpoints: `<out>/checkpoints/step-NNNNNNNN/` = state.safetensors + state.json.

state.safetensors holds every tensor (the SAE's, Adam's moments, the dead-feature
counters, the buffer's carried rows and RNG state); state.json the rest (step, tokens
seen, the config, the input scale, Adam's step counts, the buffer's position). A
checkpoint is written into a hidden temporary folder and renamed into place, so a
folder named step-* is always complete; older ones beyond `keep` are removed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CHECKPOINTS_DIR = "checkpoints"
TENSORS_FILE, STATE_FILE = "state.safetensors", "state.json"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """Everything needed to continue a run exactly where it stopped."""

    step: int
    state: dict[str, Any]  # JSON-able
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def checkpoints_dir(out_dir: Path) -> Path:
    return out_dir / CHECKPOINTS_DIR


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = checkpoints_dir(out_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def save_checkpoint(out_dir: Path, ckpt: Checkpoint, keep: int = 2) -> Path:
    root = checkpoints_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"step-{ckpt.step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        # safetensors wants contiguous tensors that share no memory
        tensors = {k: v.detach().contiguous().cpu().clone() for k, v in ckpt.tensors.items()}
        save_file(tensors, str(tmp / TENSORS_FILE))
        state = {"format": FORMAT_VERSION, "step": ckpt.step, **ckpt.state}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
        for name in (TENSORS_FILE, STATE_FILE):
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(path: Path) -> Checkpoint:
    state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path} has format {state.get('format')!r}, this glossator reads "
            f"{FORMAT_VERSION}; delete {path.parent} to start over"
        )
    return Checkpoint(int(state["step"]), state, load_file(str(path / TENSORS_FILE)))


def latest_checkpoint(out_dir: Path) -> Checkpoint | None:
    found = list_checkpoints(out_dir)
    return load_checkpoint(found[-1]) if found else None


def latest_state(out_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint's state.json (config, step, ...) without its tensors."""
    found = list_checkpoints(out_dir)
    if not found:
        return None
    state: dict[str, Any] = json.loads((found[-1] / STATE_FILE).read_text(encoding="utf-8"))
    return state


def remove_checkpoints(out_dir: Path) -> None:
    shutil.rmtree(checkpoints_dir(out_dir), ignore_errors=True)
