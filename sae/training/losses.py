"""The training forward pass and losses of TopK-family SAEs.

Loss (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"):

    L = NMSE(x, x^) + auxk_coef * NMSE(e, e^)

NMSE(a, b) = sum ||a - b||^2 / sum ||a - mean(a)||^2 over the batch: the fraction of
variance unexplained, so 1 - NMSE is the batch's explained variance. e = x - x^
(no gradient), e^ = the reconstruction of e by the top-k_aux pre-activations of the
dead features alone (no decoder bias), which gives dead features a gradient (AuxK, sec.
A.2); with fewer than k_aux dead features the term is scaled by n_dead / k_aux.

Matryoshka (Bussmann et al. 2025): the reconstruction term is averaged over the nested
prefixes [0, w) of the dictionary (the paper sums them; the mean keeps the AuxK
coefficient's meaning, and Adam is invariant to the overall scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sae.base import SparseAutoencoder
from sae.training.sparse_ops import Selection, decode_selected, selected_pre_acts

# BatchTopK ranks the whole batch; each row's top `_CANDIDATE_FACTOR * k` pre-activations
# are enough candidates unless a row takes all of them (then the exact full sort runs).
_CANDIDATE_FACTOR = 4


@dataclass
class StepOutput:
    loss: torch.Tensor  # what is minimised
    fvu: torch.Tensor  # NMSE of the full reconstruction (no grad)
    aux: torch.Tensor  # AuxK NMSE (0 when no feature is dead)
    l0: float  # mean active features per row
    fired: torch.Tensor  # bool [d_sae], features active on some row of the batch
    values: torch.Tensor  # [nnz] active values (no grad), for BatchTopK's threshold
    recon: torch.Tensor  # [N, d_in] (no grad)


def nmse(target: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """sum ||target - recon||^2 / sum ||target - mean(target)||^2 over the batch."""
    total = (target - target.mean(dim=0)).pow(2).sum().clamp_min(1e-12)
    return (target - recon).pow(2).sum() / total


def dense_pre_acts(
    sae: SparseAutoencoder, x: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Pre-activations [N, d_sae] without autograd (used to rank features), multiplied in
    `dtype` (bfloat16 as in mixed-precision training: the selected values carry its
    rounding forward; the gradients are float32)."""
    with torch.no_grad():
        bias: torch.Tensor = sae.b_enc
        if sae.cfg.apply_b_dec_to_input:
            bias = bias - sae.b_dec @ sae.W_enc
        return torch.addmm(bias.to(dtype), x.to(dtype), sae.W_enc.to(dtype))


def select_topk(pre: torch.Tensor, k: int) -> Selection:
    """Each row's k largest pre-activations (TopK)."""
    n = pre.shape[0]
    values, feats = pre.topk(k, dim=-1, sorted=False)
    rows = torch.arange(n, device=pre.device).repeat_interleave(k)
    return Selection(rows, feats.reshape(-1), values.reshape(-1), n)


def select_batch_topk(pre: torch.Tensor, k: int) -> Selection:
    """The k * N largest pre-activations of the whole batch (BatchTopK)."""
    n, d_sae = pre.shape
    budget = k * n
    per_row = min(d_sae, _CANDIDATE_FACTOR * k)
    cand_values, cand_feats = pre.topk(per_row, dim=-1, sorted=False)
    values, flat = cand_values.reshape(-1).topk(budget, sorted=False)
    rows = flat // per_row
    if per_row < d_sae and int(torch.bincount(rows, minlength=n).max()) >= per_row:
        # Some row may hold more than its candidates: rank the full matrix instead.
        values, flat = pre.reshape(-1).topk(budget, sorted=False)
        rows, feats = flat // d_sae, flat % d_sae
    else:
        feats = cand_feats.reshape(-1)[flat]
    order = torch.argsort(rows, stable=True)
    return Selection(rows[order], feats[order], values[order], n)


def select(sae: SparseAutoencoder, pre: torch.Tensor) -> Selection:
    k = int(sae.cfg.k or 0)
    if sae.cfg.architecture == "topk":
        return select_topk(pre, k)
    if sae.cfg.architecture in ("batchtopk", "matryoshka"):
        return select_batch_topk(pre, k)
    raise ValueError(f"no training rule for architecture {sae.cfg.architecture!r}")


def training_step(
    sae: SparseAutoencoder,
    x: torch.Tensor,
    dead: torch.Tensor | None,
    k_aux: int,
    auxk_coef: float,
    matryoshka_widths: list[int] | None = None,
    encoder_dtype: torch.dtype = torch.float32,
    auxk_fraction: float = 1.0,
) -> StepOutput:
    """Forward pass and loss for one batch x [N, d_in] (already scaled, rows in random
    order); AuxK on its first `auxk_fraction` of rows."""
    b_dec = sae.b_dec if sae.cfg.apply_b_dec_to_input else None
    pre = dense_pre_acts(sae, x, encoder_dtype)
    sel = select(sae, pre)
    values = selected_pre_acts(sel, x, sae.W_enc, sae.b_enc, b_dec).relu()
    if matryoshka_widths:
        recons = _prefix_reconstructions(sae, sel, values, matryoshka_widths)
        recon = recons[-1]
        loss = torch.stack([nmse(x, r) for r in recons]).mean()
        fvu = nmse(x, recon.detach())
    else:
        recon = decode_selected(values, sel, sae.W_dec) + sae.b_dec
        loss = nmse(x, recon)
        fvu = loss.detach()
    aux = torch.zeros((), device=x.device)
    if dead is not None and auxk_coef > 0 and bool(dead.any()):
        m = max(1, round(auxk_fraction * x.shape[0]))
        aux = _auxk(sae, x[:m], pre[:m], recon.detach()[:m], dead, k_aux, b_dec)
        loss = loss + auxk_coef * aux
    active = values.detach() > 0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool, device=x.device)
    fired[sel.feats[active]] = True
    return StepOutput(
        loss=loss,
        fvu=fvu,
        aux=aux.detach(),
        l0=float(active.sum()) / max(sel.n_rows, 1),
        fired=fired,
        values=values.detach()[active],
        recon=recon.detach(),
    )


def _prefix_reconstructions(
    sae: SparseAutoencoder, sel: Selection, values: torch.Tensor, widths: list[int]
) -> list[torch.Tensor]:
    """Reconstruction from features [0, w) for each width w: the bias plus the running
    sum of each group's [previous w, w) contribution."""
    recons: list[torch.Tensor] = []
    running: torch.Tensor = sae.b_dec.expand(sel.n_rows, sae.d_in)
    start = 0
    for width in widths:
        keep = (sel.feats >= start) & (sel.feats < width)
        support = torch.arange(start, width, device=sel.feats.device)
        part = decode_selected(values[keep], sel.subset(keep), sae.W_dec, support)
        running = running + part
        recons.append(running)
        start = width
    return recons


def _auxk(
    sae: SparseAutoencoder,
    x: torch.Tensor,
    pre: torch.Tensor,
    recon: torch.Tensor,
    dead: torch.Tensor,
    k_aux: int,
    b_dec: torch.Tensor | None,
) -> torch.Tensor:
    """NMSE of the residual's reconstruction by the top-k_aux dead features (AuxK)."""
    dead_ids = dead.nonzero().squeeze(1)
    k = min(k_aux, dead_ids.numel())
    top_values, local = pre[:, dead_ids].topk(k, dim=-1, sorted=False)
    n = x.shape[0]
    rows = torch.arange(n, device=x.device).repeat_interleave(k)
    sel = Selection(rows, dead_ids[local.reshape(-1)], top_values.reshape(-1), n)
    values = selected_pre_acts(sel, x, sae.W_enc, sae.b_enc, b_dec).relu()
    residual = x - recon
    # Fewer dead features than k_aux cannot be asked to explain the whole residual: scale
    # the term down by n_dead / k_aux (as sparsify and SAELens do).
    scale = min(1.0, dead_ids.numel() / k_aux)
    return scale * nmse(residual, decode_selected(values, sel, sae.W_dec, support=dead_ids))


@torch.no_grad()
def project_decoder_grad_(sae: SparseAutoencoder) -> None:
    """Remove the part of each decoder row's gradient parallel to the row (Gao et al.
    2024, sec. A.3), since the row is renormalised to unit norm after the step anyway."""
    grad = sae.W_dec.grad
    if grad is None:
        return
    rows = sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    grad -= (grad * rows).sum(dim=-1, keepdim=True) * rows


@torch.no_grad()
def geometric_median(points: torch.Tensor, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """The point minimising the sum of Euclidean distances to `points` [N, D]
    (Weiszfeld's algorithm in float64, started at the mean)."""
    pts = points.double()
    median = pts.mean(dim=0)
    for _ in range(iters):
        weights = 1.0 / (pts - median).norm(dim=1).clamp_min(1e-8)
        new = (weights[:, None] * pts).sum(dim=0) / weights.sum()
        shift = float((new - median).norm())
        median = new
        if shift <= tol * max(float(median.norm()), 1.0):
            break
    return median.to(points.dtype)


class DeadFeatureTracker:
    """Tokens since each feature last fired; a feature is dead after `window` tokens."""

    def __init__(self, d_sae: int, window: int, device: torch.device) -> None:
        self.window = window
        self.since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)

    def update(self, fired: torch.Tensor, n_tokens: int) -> None:
        self.since_fired += n_tokens
        self.since_fired[fired] = 0

    def dead(self) -> torch.Tensor:
        return self.since_fired >= self.window

    def dead_fraction(self) -> float:
        return float(self.dead().float().mean())
