"""SAE quality metrics (sae/metrics.py) against brute-force formulas written out here."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from sae.base import SAEConfig, SparseAutoencoder
from sae.metrics import ReconstructionStats, quality_metrics
from sae.registry import build_sae
from tests.sae_helpers import identity_sae

D_IN, D_SAE = 16, 64
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_sae(arch: str, seed: int = 0, **cfg: Any) -> SparseAutoencoder:
    sae = build_sae(SAEConfig(architecture=arch, d_in=D_IN, d_sae=D_SAE, **cfg))
    sae.init_weights(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.b_enc.copy_(0.3 * torch.randn(D_SAE, generator=gen))
        sae.b_dec.copy_(torch.randn(D_IN, generator=gen))
    return sae


def activations(n: int = 300, seed: int = 0, offset: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, D_IN, generator=gen) * 2 + offset


def brute_force(sae: SparseAutoencoder, x: torch.Tensor) -> dict[str, Any]:
    """Every metric from the dense codes of all tokens at once, in float64."""
    with torch.no_grad():
        codes = sae.encode(x)
        recon = sae.decode(codes)
    x64, r64 = x.double(), recon.double()
    counts = (codes != 0).sum(dim=0)
    return {
        "l0": float((codes != 0).sum(dim=-1).double().mean()),
        "explained_variance": float(
            1 - (x64 - r64).pow(2).sum() / (x64 - x64.mean(dim=0)).pow(2).sum()
        ),
        "mse": float((x64 - r64).pow(2).mean()),
        "cosine": float(F.cosine_similarity(x64, r64, dim=-1).mean()),
        "fraction_alive": float((counts > 0).double().mean()),
        "counts": counts,
    }


@pytest.mark.parametrize(("arch", "cfg"), [("topk", {"k": 5}), ("standard", {})])
def test_metrics_match_brute_force(arch: str, cfg: dict[str, Any]) -> None:
    sae = random_sae(arch, **cfg)
    x = activations(offset=50.0)  # a large mean: total variance must not cancel
    expected = brute_force(sae, x)
    got = quality_metrics(sae, x, batch_tokens=37)  # batches of uneven size
    assert got.n_tokens == 300
    for key in ("l0", "explained_variance", "mse", "cosine", "fraction_alive"):
        assert getattr(got, key) == pytest.approx(expected[key], rel=1e-5, abs=1e-7), key
    assert torch.equal(got.firing_counts_F, expected["counts"])
    assert got.firing_counts_F.dtype == torch.int64
    assert 0 < got.fraction_alive < 1 or arch == "standard"
    if arch == "topk":
        assert got.l0 <= 5


def test_streamed_batches_equal_one_tensor() -> None:
    sae = random_sae("topk", k=4)
    x = activations(257)
    whole = quality_metrics(sae, x, batch_tokens=10_000)
    streamed = quality_metrics(sae, iter(x.split(50)))
    assert streamed.summary() == pytest.approx(whole.summary(), rel=1e-6)
    assert torch.equal(streamed.firing_counts_F, whole.firing_counts_F)


def test_perfect_reconstruction() -> None:
    x = activations(100, offset=3.0)
    got = quality_metrics(identity_sae(D_IN), x)
    assert got.explained_variance == 1.0
    assert got.mse == 0.0
    assert got.cosine == pytest.approx(1.0, abs=1e-12)
    assert got.l0 == D_IN  # one of relu(x_i), relu(-x_i) per dimension
    assert got.fraction_alive == 1.0


def test_zero_reconstruction_explains_nothing() -> None:
    sae = build_sae(SAEConfig(architecture="standard", d_in=D_IN, d_sae=D_SAE))  # all zeros
    x = activations(64)
    got = quality_metrics(sae, x)
    expected_ev = 1 - float(
        x.double().pow(2).sum() / (x.double() - x.double().mean(0)).pow(2).sum()
    )
    assert got.explained_variance == pytest.approx(expected_ev)
    assert got.l0 == 0 and got.fraction_alive == 0 and got.cosine == 0
    assert got.n_alive == 0 and got.summary()["d_sae"] == D_SAE


def test_bad_input_is_refused() -> None:
    sae = random_sae("topk", k=4)
    with pytest.raises(ValueError, match="no tokens"):
        quality_metrics(sae, torch.zeros(0, D_IN))
    stats = ReconstructionStats(D_IN, D_SAE)
    with pytest.raises(ValueError, match=r"\[N, 16\]"):
        stats.update(torch.zeros(3, D_IN), torch.zeros(3, D_IN + 1), sae.encode_sparse(x_zero()))
    with pytest.raises(ValueError, match="batch_tokens"):
        quality_metrics(sae, activations(4), batch_tokens=0)


def x_zero() -> torch.Tensor:
    return torch.zeros(3, D_IN)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_devices_and_dtypes(device: str, dtype: torch.dtype) -> None:
    sae = random_sae("topk", k=5)
    x = activations(200)
    reference = quality_metrics(sae, x)
    sae = sae.to(device=device, dtype=dtype)
    got = quality_metrics(sae, x.to(device), batch_tokens=64)
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    assert got.explained_variance == pytest.approx(reference.explained_variance, rel=tol, abs=tol)
    assert got.cosine == pytest.approx(reference.cosine, rel=tol)
    assert got.firing_counts_F.device.type == "cpu"
    if dtype == torch.float32:
        assert torch.equal(got.firing_counts_F, reference.firing_counts_F)
