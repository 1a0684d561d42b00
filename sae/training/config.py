"""What a training run is: the dictionary's shape, the optimiser, the schedule, the data.

Default constants and where they come from:

- Adam betas (0.9, 0.999) and eps 6.25e-10: Gao et al. 2024 ("Scaling and evaluating
  sparse autoencoders", sec. A.3, and their released training loop).
- learning rate 2e-4 / sqrt(d_sae / 2^14): Gao et al. 2024 (the LR that scales as
  1/sqrt(n_latents)); EleutherAI's sparsify uses the same default.
- linear warm-up over the first 5% of steps, capped at 1,000 steps (sparsify's
  lr_warmup_steps=1000), then a linear decay to 0 over the last 20% of steps (Anthropic,
  "Circuits Updates, April 2024").
- AuxK: k_aux = d_in // 2 (the heuristic of Gao et al. 2024, app. B.1, as sparsify and
  SAELens use it) and coefficient 1/32 (Gao et al. 2024, sec. A.2).
- 4,096 tokens per step: SAELens' default training batch.
- inputs scaled so that the mean activation norm is sqrt(d_in) (Anthropic, "Circuits
  Updates, April 2024"); the scale is folded into the saved weights.
- the encoder's dense product (which ranks the features) in bfloat16 where the device
  multiplies it fast ("auto"), as mixed-precision training does; gradients in float32.
- b_dec starts at the geometric median of a sample (Bricken et al. 2023, kept by
  Gao et al. 2024, sec. A.1).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from errors import UserError
from sae.devices import fast_bfloat16

Architecture = Literal["topk", "batchtopk", "matryoshka"]
ARCHITECTURES: tuple[str, ...] = ("topk", "batchtopk", "matryoshka")
EncoderDtype = Literal["auto", "float32", "bfloat16"]
ENCODER_DTYPES: tuple[str, ...] = get_args(EncoderDtype)

GAO_BASE_LR = 2e-4  # Gao et al. 2024: LR at 2^14 latents, scaled by 1/sqrt(n / 2^14)
GAO_BASE_WIDTH = 2**14
ADAM_BETAS = (0.9, 0.999)  # Gao et al. 2024, sec. A.3
ADAM_EPS = 6.25e-10  # Gao et al. 2024 (released training code)
AUXK_COEF = 1 / 32  # Gao et al. 2024, sec. A.2 (alpha)
WARMUP_FRACTION = 0.05
WARMUP_MAX_STEPS = 1000  # sparsify's lr_warmup_steps
DECAY_FRACTION = 0.2  # Anthropic, Circuits Updates April 2024: linear decay over last 20%
BATCH_TOKENS = 4096  # SAELens' default train_batch_size_tokens
# Gao et al. call a feature dead after 10M tokens without firing, in runs of billions of
# tokens. Our runs are a few million tokens, so the window is 1/20 of the run, at least
# 100k tokens: at the mean firing rate k/d_sae (1/128 for k=32, 4,096 features) a live
# feature fires ~800 times in 100k tokens, and one 100x rarer than average still ~8
# times, so being flagged dead by chance is unlikely; and AuxK starts early enough to
# revive features within the run.
DEAD_TOKENS_MAX = 10_000_000
DEAD_TOKENS_MIN = 100_000
DEAD_TOKENS_FRACTION = 1 / 20
THRESHOLD_FRACTION = 0.1  # BatchTopK: θ averaged over the last 10% of training batches


class TrainConfig(BaseModel):
    """One training run. Everything that changes the result is in here (and is checked
    against a checkpoint's copy on resume); `None` fields take the documented defaults."""

    model_config = ConfigDict(extra="forbid")

    architecture: Architecture = "topk"
    d_in: int = Field(gt=0)
    d_sae: int = Field(gt=0)
    k: int = Field(default=32, gt=0)
    matryoshka_widths: list[int] | None = None  # default for matryoshka: d_sae/16, /4, 1
    total_tokens: int = Field(gt=0)
    batch_tokens: int = Field(default=BATCH_TOKENS, gt=0)
    buffer_tokens: int = Field(default=65_536, gt=0)  # shuffling buffer (tokens)
    lr: float | None = Field(default=None, gt=0)
    warmup_steps: int | None = Field(default=None, ge=0)
    decay_fraction: float = Field(default=DECAY_FRACTION, ge=0, le=1)
    adam_betas: tuple[float, float] = ADAM_BETAS
    adam_eps: float = ADAM_EPS
    auxk_coef: float = Field(default=AUXK_COEF, ge=0)
    k_aux: int | None = Field(default=None, gt=0)
    # AuxK on this fraction of each batch's rows (1: all, as Gao et al.): with half the
    # features dead it is most of a step's time on a CPU.
    auxk_fraction: float = Field(default=1.0, gt=0, le=1)
    dead_tokens: int | None = Field(default=None, gt=0)
    normalize_inputs: bool = True
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
    init_sample_tokens: int = Field(default=16_384, gt=0)
    threshold_fraction: float = Field(default=THRESHOLD_FRACTION, gt=0, le=1)
    encoder_dtype: EncoderDtype = "auto"
    seed: int = 0
    hookpoint: str | None = None
    model_name: str | None = None

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.k > self.d_sae:
            raise UserError(f"k={self.k} must be at most the width d_sae={self.d_sae}")
        if self.architecture == "matryoshka":
            widths = self.resolved_matryoshka_widths()
            if any(b <= a for a, b in zip([0, *widths], widths, strict=False)) or (
                widths[-1] != self.d_sae
            ):
                raise UserError(
                    f"matryoshka_widths must increase strictly and end at d_sae={self.d_sae}, "
                    f"got {widths}"
                )
        elif self.matryoshka_widths is not None:
            raise UserError("matryoshka_widths is only for the 'matryoshka' architecture")
        return self

    # -- resolved defaults ---------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        return math.ceil(self.total_tokens / self.batch_tokens)

    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return GAO_BASE_LR / math.sqrt(self.d_sae / GAO_BASE_WIDTH)

    def resolved_warmup_steps(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(WARMUP_MAX_STEPS, int(self.total_steps * WARMUP_FRACTION))

    def resolved_encoder_dtype(self, device: torch.device) -> torch.dtype:
        """'auto': bfloat16 where `device` multiplies it fast, else float32."""
        if self.encoder_dtype == "auto":
            return torch.bfloat16 if fast_bfloat16(device) else torch.float32
        return torch.bfloat16 if self.encoder_dtype == "bfloat16" else torch.float32

    def resolved_k_aux(self) -> int:
        return self.k_aux if self.k_aux is not None else max(1, self.d_in // 2)

    def resolved_dead_tokens(self) -> int:
        if self.dead_tokens is not None:
            return self.dead_tokens
        scaled = int(self.total_tokens * DEAD_TOKENS_FRACTION)
        return min(DEAD_TOKENS_MAX, max(DEAD_TOKENS_MIN, scaled))

    def resolved_matryoshka_widths(self) -> list[int]:
        if self.matryoshka_widths is not None:
            return list(self.matryoshka_widths)
        # Our default: three nested prefixes, each 4x the previous (1/16, 1/4, all).
        return sorted({max(1, self.d_sae // 16), max(1, self.d_sae // 4), self.d_sae})

    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step `step` (0-based): warm-up, flat, linear decay."""
        peak = self.resolved_lr()
        warmup = self.resolved_warmup_steps()
        if step < warmup:
            return peak * (step + 1) / warmup
        total = self.total_steps
        decay_steps = int(total * self.decay_fraction)
        decay_start = total - decay_steps
        if decay_steps > 0 and step >= decay_start:
            return peak * max(0.0, (total - step) / (decay_steps + 1))
        return peak

    def threshold_start_step(self) -> int:
        """First step whose codes feed BatchTopK's inference threshold."""
        return self.total_steps - max(1, math.ceil(self.total_steps * self.threshold_fraction))
