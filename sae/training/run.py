"""Run a training to the end: `train_sae` = Trainer + resume + final save.

    result = train_sae(TrainConfig(d_in=576, d_sae=4096, total_tokens=2_000_000), source,
                       out_dir=Path("my-sae"))
    result.sae          # takes raw activations; also saved in my-sae/ (SAELens format)

`out_dir` ends up holding exactly an SAELens folder (cfg.json + sae_weights.safetensors);
while the run is unfinished it also holds `checkpoints/`.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sae.base import SparseAutoencoder
from sae.loading import save_sae
from sae.training import checkpoint as ckpt_io
from sae.training.buffer import ChunkFn, ChunkSource
from sae.training.config import TrainConfig
from sae.training.trainer import Trainer, TrainingError

log = logging.getLogger(__name__)

_SAE_FILES = ("cfg.json", "sae_weights.safetensors")


@dataclass
class TrainResult:
    sae: SparseAutoencoder  # reads raw activations, eval mode
    path: Path | None
    stats: dict[str, Any] = field(default_factory=dict)


def train_sae(
    cfg: TrainConfig,
    source: ChunkSource | ChunkFn | Iterable[torch.Tensor],
    out_dir: Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    device: str | torch.device = "cpu",
    checkpoint_every: int = 500,
    keep_checkpoints: int = 2,
    evaluate: Callable[[SparseAutoencoder], dict[str, Any]] | None = None,
    metadata: dict[str, Any] | None = None,
) -> TrainResult:
    """Train, then save the SAE (SAELens format) into `out_dir` when given.

    `evaluate(sae)` (optional) measures the finished, raw-input SAE, e.g. on held-out
    tokens; its dict goes into `cfg.metadata["heldout"]`. `metadata` is added as is.
    Checkpoints go to `out_dir/checkpoints` every `checkpoint_every` steps and are
    removed once the SAE is saved.
    """
    trainer = Trainer(cfg, source, out_dir, device, checkpoint_every, keep_checkpoints)
    if out_dir is not None:
        check_out_dir(out_dir, resume)
        out_dir.mkdir(parents=True, exist_ok=True)
        latest = ckpt_io.latest_checkpoint(out_dir) if resume else None
        if latest is not None:
            log.info("resuming from step %d in %s", latest.step, out_dir)
            trainer.restore(latest)
    trainer.train(progress=progress)
    stats = trainer.summary()
    meta: dict[str, Any] = {**(metadata or {}), "training": stats}
    sae = trainer.folded_sae(meta)
    if evaluate is not None:
        meta["heldout"] = evaluate(sae)
        sae.cfg.metadata = meta
    if out_dir is not None:
        _write_final(sae, out_dir)
        ckpt_io.remove_checkpoints(out_dir)
    return TrainResult(sae, out_dir, meta)


def check_out_dir(out_dir: Path, resume: bool) -> None:
    """Refuse a folder holding a finished SAE, or an unfinished run unless resuming."""
    if out_dir.exists() and not out_dir.is_dir():
        raise TrainingError(f"{out_dir} is a file; give a folder for the SAE")
    if all((out_dir / name).is_file() for name in _SAE_FILES):
        raise TrainingError(
            f"{out_dir} already holds a trained SAE; choose another folder or delete it"
        )
    if not resume and ckpt_io.list_checkpoints(out_dir):
        raise TrainingError(
            f"{out_dir} holds checkpoints of an unfinished run; resume it (--resume) or "
            f"delete {ckpt_io.checkpoints_dir(out_dir)} to start over"
        )


def _write_final(sae: SparseAutoencoder, out_dir: Path) -> None:
    """save_sae into a hidden folder, then move its files in (cfg.json last, so a folder
    with cfg.json + weights is always a complete SAE)."""
    staging = out_dir / ".final"
    shutil.rmtree(staging, ignore_errors=True)
    save_sae(sae, staging)
    files = sorted(staging.iterdir(), key=lambda p: p.name == "cfg.json")
    for file in files:
        os.replace(file, out_dir / file.name)
    shutil.rmtree(staging, ignore_errors=True)
