"""The training loop of TopK / BatchTopK / Matryoshka SAEs (`train_sae` in `run` drives it).

Each step: scale the batch (inputs are normalised so that the mean norm is sqrt(d_in)),
compute the loss (`losses.training_step`), remove the decoder gradient's component
parallel to each row, take an Adam step at the scheduled learning rate, renormalise the
decoder rows, update the dead-feature counters. BatchTopK and Matryoshka SAEs average
their inference threshold over the training batches of the last `threshold_fraction`
of steps (Bussmann et al. 2024). At the end the input scale is folded into the weights
(b_enc, b_dec and the threshold divided by it; W_enc and the unit-norm W_dec unchanged),
so the saved SAE reads raw activations and its feature values are in raw units.

Resume: `resume=True` continues from the newest checkpoint in `out_dir/checkpoints`.
Given the same source (same chunks in the same order), the run is bit-identical to an
uninterrupted one on CPU with the same torch version and thread count: weights, Adam's
moments, the dead-feature counters, the buffer's fill and RNG state are all restored
exactly. On CUDA, sparse matrix products and index_add use atomics, so results agree
only to float tolerance. A source that cannot restart at a chunk (a plain iterable) is
replayed from its start.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from errors import UserError
from sae.architectures.batchtopk import BatchTopKSAE
from sae.base import SAEConfig, SparseAutoencoder
from sae.formats import dtype_name
from sae.registry import build_sae
from sae.training import checkpoint as ckpt_io
from sae.training.buffer import ActivationBuffer, ChunkFn, ChunkSource
from sae.training.config import TrainConfig
from sae.training.losses import (
    DeadFeatureTracker,
    geometric_median,
    project_decoder_grad_,
    training_step,
)
from sae.training.progress import RunningStats, TrainingProgress

log = logging.getLogger(__name__)

_PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")  # optimiser order, fixed for checkpoints


class TrainingError(UserError):
    """A run cannot start or continue as asked; the message says what to do."""


def sae_config(cfg: TrainConfig, metadata: dict[str, Any] | None = None) -> SAEConfig:
    return SAEConfig(
        architecture=cfg.architecture,
        d_in=cfg.d_in,
        d_sae=cfg.d_sae,
        k=cfg.k,
        matryoshka_widths=(
            cfg.resolved_matryoshka_widths() if cfg.architecture == "matryoshka" else None
        ),
        hookpoint=cfg.hookpoint,
        model_name=cfg.model_name,
        metadata=metadata or {},
    )


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        source: ChunkSource | ChunkFn | Iterable[torch.Tensor],
        out_dir: Path | None = None,
        device: str | torch.device = "cpu",
        checkpoint_every: int = 0,
        keep_checkpoints: int = 2,
    ) -> None:
        self.cfg = cfg
        self.out_dir = out_dir
        self.device = torch.device(device)
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.sae = build_sae(sae_config(cfg)).to(self.device)
        self.sae.train()
        params = [getattr(self.sae, name) for name in _PARAMS]
        self.opt = torch.optim.Adam(
            params, lr=cfg.resolved_lr(), betas=cfg.adam_betas, eps=cfg.adam_eps
        )
        self.buffer = ActivationBuffer(
            source, cfg.buffer_tokens, cfg.batch_tokens, seed=cfg.seed, device=self.device
        )
        self.encoder_dtype = cfg.resolved_encoder_dtype(self.device)
        self.dead = DeadFeatureTracker(cfg.d_sae, cfg.resolved_dead_tokens(), self.device)
        self.stats = RunningStats()
        self.step = 0
        self.tokens_seen = 0
        self.scale = 1.0
        self.elapsed = 0.0
        self.resumed_from: int | None = None
        self._initialised = False

    # -- initialisation ------------------------------------------------------------------

    @torch.no_grad()
    def initialise(self) -> None:
        """Input scale and weights from a sample of the first buffer fill."""
        sample = self.buffer.peek(self.cfg.init_sample_tokens)
        if sample.shape[0] == 0:
            raise TrainingError("the activation source yielded no tokens")
        if sample.shape[1] != self.cfg.d_in:
            raise TrainingError(
                f"activations are {sample.shape[1]} wide but d_in={self.cfg.d_in}; read the "
                "hookpoint the SAE is for, or set d_in to the model's width there"
            )
        if self.cfg.normalize_inputs:
            mean_norm = float(sample.norm(dim=1).mean())
            if not math.isfinite(mean_norm) or mean_norm <= 0:
                raise TrainingError(f"activations have mean norm {mean_norm}; cannot scale them")
            self.scale = math.sqrt(self.cfg.d_in) / mean_norm
        self.sae.init_weights(self.cfg.seed)
        scaled = sample * self.scale
        if self.cfg.b_dec_init == "geometric_median":
            self.sae.b_dec.copy_(geometric_median(scaled))
        elif self.cfg.b_dec_init == "mean":
            self.sae.b_dec.copy_(scaled.mean(dim=0))
        self._initialised = True

    # -- the loop ------------------------------------------------------------------------

    def train(self, progress: bool = True) -> None:
        if not self._initialised:
            self.initialise()
        cfg = self.cfg
        widths = cfg.resolved_matryoshka_widths() if cfg.architecture == "matryoshka" else None
        threshold_from = cfg.threshold_start_step()
        label = f"training {cfg.architecture} SAE ({cfg.d_sae:,} features)"
        t0 = time.perf_counter() - self.elapsed
        with TrainingProgress(cfg.total_steps, self.step, progress, label) as view:
            while self.step < cfg.total_steps:
                batch = self.buffer.next_batch()
                if batch is None:
                    log.warning(
                        "the activation source ended after %d tokens, before the %d planned",
                        self.tokens_seen,
                        cfg.total_tokens,
                    )
                    break
                self._step(batch * self.scale, widths, self.step >= threshold_from)
                self.elapsed = time.perf_counter() - t0
                view.advance(self.step, batch.shape[0], self.stats)
                if self._due_for_checkpoint():
                    self.save_checkpoint()

    def _step(self, x: torch.Tensor, widths: list[int] | None, feed_threshold: bool) -> None:
        cfg = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr_at(self.step)
        dead = self.dead.dead()
        out = training_step(
            self.sae,
            x,
            dead,
            cfg.resolved_k_aux(),
            cfg.auxk_coef,
            widths,
            self.encoder_dtype,
            cfg.auxk_fraction,
        )
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        project_decoder_grad_(self.sae)
        self.opt.step()
        self.sae.normalize_decoder_()
        self.dead.update(out.fired, x.shape[0])
        if feed_threshold and isinstance(self.sae, BatchTopKSAE):
            self.sae.update_threshold_(out.values)
        self.step += 1
        self.tokens_seen += x.shape[0]
        fvu = float(out.fvu)
        self.stats.update(
            float(out.loss.detach()), 1.0 - fvu, out.l0, float(out.aux), self.dead.dead_fraction()
        )

    def _due_for_checkpoint(self) -> bool:
        return (
            self.out_dir is not None
            and self.checkpoint_every > 0
            and self.step % self.checkpoint_every == 0
            and self.step < self.cfg.total_steps
        )

    # -- checkpoints ---------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        assert self.out_dir is not None
        tensors = {f"sae.{k}": v for k, v in self.sae.tensors().items()}
        opt_state = self.opt.state_dict()
        steps: list[float] = []
        for i in range(len(_PARAMS)):
            state = opt_state["state"].get(i, {})
            steps.append(float(state["step"]) if "step" in state else 0.0)
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    tensors[f"optim.{i}.{key}"] = state[key]
        tensors["dead.since_fired"] = self.dead.since_fired
        buf = self.buffer.state_dict()
        if buf["carry"] is not None:
            tensors["buffer.carry"] = buf["carry"]
        if buf["rng"] is not None:
            tensors["buffer.rng"] = buf["rng"]
        state = {
            "tokens_seen": self.tokens_seen,
            "elapsed_s": self.elapsed,
            "input_scale": self.scale,
            "config": self.cfg.model_dump(mode="json"),
            "optim": {"steps": steps, "param_groups": opt_state["param_groups"]},
            "buffer": {k: buf[k] for k in ("fill_chunk", "served", "tokens_served")},
            "threshold_batches": getattr(self.sae, "threshold_batches", 0),
            "stats": {
                "loss": self.stats.loss,
                "explained_variance": self.stats.explained_variance,
                "l0": self.stats.l0,
                "aux": self.stats.aux,
                "seen": self.stats._seen,
            },
        }
        ckpt = ckpt_io.Checkpoint(self.step, state, tensors)
        return ckpt_io.save_checkpoint(self.out_dir, ckpt, keep=self.keep_checkpoints)

    @torch.no_grad()
    def restore(self, ckpt: ckpt_io.Checkpoint) -> None:
        saved = TrainConfig.model_validate(ckpt.state["config"])
        if saved != self.cfg:
            diff = _config_diff(saved, self.cfg)
            raise TrainingError(
                f"the checkpoint at step {ckpt.step} was made with other settings ({diff}); "
                "resume with the same settings, or delete its checkpoints folder to start over"
            )
        t = ckpt.tensors
        for name, tensor in self.sae.tensors().items():
            tensor.copy_(t[f"sae.{name}"].to(tensor.device))
        opt_state: dict[str, Any] = {
            "state": {},
            "param_groups": ckpt.state["optim"]["param_groups"],
        }
        for i, step in enumerate(ckpt.state["optim"]["steps"]):
            if f"optim.{i}.exp_avg" in t:
                opt_state["state"][i] = {
                    "step": torch.tensor(step, dtype=torch.float32),
                    "exp_avg": t[f"optim.{i}.exp_avg"].to(self.device),
                    "exp_avg_sq": t[f"optim.{i}.exp_avg_sq"].to(self.device),
                }
        self.opt.load_state_dict(opt_state)
        self.dead.since_fired = t["dead.since_fired"].to(self.device)
        self.buffer.load_state_dict(
            {**ckpt.state["buffer"], "carry": t.get("buffer.carry"), "rng": t.get("buffer.rng")}
        )
        if isinstance(self.sae, BatchTopKSAE):
            self.sae.threshold_batches = int(ckpt.state["threshold_batches"])
        s = ckpt.state["stats"]
        self.stats.loss, self.stats.explained_variance = s["loss"], s["explained_variance"]
        self.stats.l0, self.stats.aux, self.stats._seen = s["l0"], s["aux"], s["seen"]
        self.stats.dead_fraction = self.dead.dead_fraction()
        self.step, self.tokens_seen = ckpt.step, int(ckpt.state["tokens_seen"])
        self.scale = float(ckpt.state["input_scale"])
        self.elapsed = float(ckpt.state["elapsed_s"])
        self.resumed_from = ckpt.step
        self._initialised = True

    # -- the result ----------------------------------------------------------------------

    @torch.no_grad()
    def folded_sae(self, metadata: dict[str, Any] | None = None) -> SparseAutoencoder:
        """A copy that reads raw activations: the input scale folded into the weights."""
        out = build_sae(sae_config(self.cfg, metadata)).to(self.device)
        for name, tensor in self.sae.tensors().items():
            value = tensor.detach().clone()
            if name in ("b_enc", "b_dec", "threshold"):
                value = value / self.scale
            getattr(out, name).data = value
        return out.eval()

    def summary(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "tokens": self.tokens_seen,
            "steps": self.step,
            "seconds": round(self.elapsed, 1),
            "tokens_per_s": round(self.tokens_seen / max(self.elapsed, 1e-9), 1),
            "explained_variance": self.stats.explained_variance,
            "loss": self.stats.loss,
            "l0": self.stats.l0,
            "auxk_loss": self.stats.aux,
            "dead_fraction": self.dead.dead_fraction(),
            "input_scale": self.scale,
            "lr": cfg.resolved_lr(),
            "warmup_steps": cfg.resolved_warmup_steps(),
            "k_aux": cfg.resolved_k_aux(),
            "encoder_dtype": dtype_name(self.encoder_dtype),
            "dead_tokens": cfg.resolved_dead_tokens(),
            "resumed_from_step": self.resumed_from,
            "config": cfg.model_dump(mode="json"),
        }


def _config_diff(a: TrainConfig, b: TrainConfig) -> str:
    da, db = a.model_dump(), b.model_dump()
    return ", ".join(f"{k}: {da[k]!r} then, {db[k]!r} now" for k in da if da[k] != db[k])
