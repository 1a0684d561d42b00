"""Every SAE architecture against formulas written out here, and its sparse path against
its dense one (sae/architectures/)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sae.architectures import standard
from sae.architectures.batchtopk import BatchTopKSAE
from sae.architectures.jumprelu import JumpReLUSAE
from sae.architectures.matryoshka import MatryoshkaSAE
from sae.architectures.topk import TopKSAE
from sae.base import SAEConfig, SAEError, SparseAutoencoder, SparseCodes
from sae.registry import architectures, build_sae

D_IN, D_SAE, K = 24, 96, 6
WIDTHS = [12, 40, D_SAE]
ARCHS = ["standard", "topk", "batchtopk", "jumprelu", "gated", "matryoshka", "abstopk", "groupmax"]
THRESHOLDED = [
    "standard",
    "topk",
    "batchtopk",
    "jumprelu",
    "matryoshka",
    "abstopk",
    "groupmax",
]  # no dense codes
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make_sae(arch: str, seed: int = 0, **overrides: Any) -> SparseAutoencoder:
    """A small SAE with random weights, biases, decoder norms and thresholds."""
    fields: dict[str, Any] = {"architecture": arch, "d_in": D_IN, "d_sae": D_SAE, "k": K}
    if arch == "matryoshka":
        fields["matryoshka_widths"] = WIDTHS
    sae = build_sae(SAEConfig(**{**fields, **overrides}))
    sae.init_weights(seed)
    gen = torch.Generator().manual_seed(seed + 1)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen)

    with torch.no_grad():
        sae.W_dec.mul_(0.5 + 1.5 * rand(D_SAE, 1))  # unequal norms: rescaling matters
        sae.b_dec.copy_(0.3 * (rand(D_IN) - 0.5))
        for name in ("b_enc", "b_gate", "b_mag", "r_mag"):
            if hasattr(sae, name):
                getattr(sae, name).copy_(0.4 * (rand(D_SAE) - 0.5))
        if isinstance(sae, BatchTopKSAE):
            sae.threshold.fill_(0.3)
        elif isinstance(sae, JumpReLUSAE):
            sae.threshold.copy_(0.5 * rand(D_SAE))
    return sae


def make_batchtopk(arch: str = "batchtopk", **overrides: Any) -> BatchTopKSAE:
    sae = make_sae(arch, **overrides)
    assert isinstance(sae, BatchTopKSAE)
    return sae


def inputs(*lead: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*lead, D_IN, generator=torch.Generator().manual_seed(seed))


# -- reference formulas (independent of the implementation) ------------------------------


def ref_sae_in(sae: SparseAutoencoder, x: torch.Tensor) -> torch.Tensor:
    return x - sae.b_dec if sae.cfg.apply_b_dec_to_input else x


def ref_rescale(sae: SparseAutoencoder, pre: torch.Tensor) -> torch.Tensor:
    return pre * sae.W_dec.norm(dim=-1) if sae.cfg.rescale_acts_by_decoder_norm else pre


def ref_codes(sae: Any, x: torch.Tensor) -> torch.Tensor:
    arch = sae.architecture
    if arch == "gated":
        x_in = ref_sae_in(sae, x)
        gate = (x_in @ sae.W_enc + sae.b_gate > 0).float()
        mag = ref_rescale(sae, x_in @ (sae.W_enc * torch.exp(sae.r_mag)) + sae.b_mag)
        return gate * torch.clamp(mag, min=0)
    pre = ref_rescale(sae, ref_sae_in(sae, x) @ sae.W_enc + sae.b_enc)
    if arch == "standard":
        return torch.clamp(pre, min=0)
    if arch == "topk":
        kth = pre.sort(dim=-1, descending=True).values[..., K - 1 : K]
        return torch.clamp(pre, min=0) * (pre >= kth)
    if arch == "abstopk":  # SAELens abstopk_sae.py: top k by |pre|, signed values
        magnitude = pre.abs()
        kth = magnitude.sort(dim=-1, descending=True).values[..., K - 1 : K]
        return pre * (magnitude >= kth)
    if arch == "groupmax":  # sparsify fused_encoder.py: max of each of K groups, ReLU'd
        groups = torch.clamp(pre, min=0).reshape(*pre.shape[:-1], K, D_SAE // K)
        return (groups * (groups == groups.max(dim=-1, keepdim=True).values)).flatten(-2)
    if arch in ("batchtopk", "matryoshka") and sae.training:  # the k*n largest of the batch
        n_rows = pre.numel() // D_SAE
        cut = pre.flatten().sort(descending=True).values[K * n_rows - 1]
        return torch.clamp(pre, min=0) * (pre >= cut)
    return pre * (pre > sae.threshold) * (pre > 0)  # jumprelu, batchtopk at inference


def ref_decode(sae: SparseAutoencoder, f: torch.Tensor) -> torch.Tensor:
    if sae.cfg.rescale_acts_by_decoder_norm:
        f = f / sae.W_dec.norm(dim=-1)
    return f @ sae.W_dec + sae.b_dec


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    return torch.allclose(a.float().cpu(), b.float().cpu(), atol=atol, rtol=1e-4)


# -- formulas and path equivalence --------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["plain", "no_b_dec_in", "rescaled"])
@pytest.mark.parametrize("arch", ARCHS)
def test_encode_and_both_decodes_match_the_formulas(arch: str, variant: str, device: str) -> None:
    overrides = {
        "plain": {},
        "no_b_dec_in": {"apply_b_dec_to_input": False},
        "rescaled": {"rescale_acts_by_decoder_norm": True},
    }[variant]
    sae = make_sae(arch, **overrides).to(device)
    x = inputs(2, 5).to(device)
    with torch.no_grad():
        f = sae.encode(x)
        expected = ref_codes(sae, x)
        sparse = sae.encode_sparse(x)
        assert f.shape == (2, 5, D_SAE)
        assert sparse.values.shape[:2] == (2, 5) and sparse.values.shape == sparse.indices.shape
        assert close(f, expected)
        assert 0 < int((f != 0).sum()) < f.numel()  # the test exercises real sparsity
        recon = ref_decode(sae, expected)
        assert sae.decode(f).shape == (2, 5, D_IN)
        assert close(sae.decode(f), recon)
        assert close(sae.decode(sparse), recon)
        assert close(sae(x), recon)


@pytest.mark.parametrize("arch", THRESHOLDED)
def test_sparse_path_never_builds_dense_codes(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sae = make_sae(arch)
    x = inputs(3, 4)
    with torch.no_grad():
        expected = sae.decode(sae.encode(x))

        def no_dense(*_: Any) -> torch.Tensor:
            raise AssertionError("encode_sparse went through the dense codes")

        monkeypatch.setattr(sae, "activate", no_dense)
        monkeypatch.setattr(sae, "encode", no_dense)
        codes = sae.encode_sparse(x)
    if arch == "topk":
        assert codes.values.shape == codes.indices.shape == (3, 4, K)
    assert codes.values.shape[-1] < D_SAE
    assert close(sae.decode(codes), expected)


@pytest.mark.parametrize("arch", THRESHOLDED)
def test_row_chunks_give_the_same_codes(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sae = make_sae(arch)
    x = inputs(7, 3)
    with torch.no_grad():
        whole = sae.encode_sparse(x)
        monkeypatch.setattr(standard, "CHUNK_ELEMENTS_CPU", 2 * D_SAE)  # chunks of 2 rows
        chunked = sae.encode_sparse(x)
        assert chunked.values.shape == whole.values.shape
        assert close(sae.decode(chunked), sae.decode(whole))


@pytest.mark.parametrize("arch", ARCHS)
def test_odd_leading_shapes(arch: str) -> None:
    sae = make_sae(arch)
    with torch.no_grad():
        one = inputs(seed=3)  # a single vector [d_in]
        assert sae.encode(one).shape == (D_SAE,)
        assert close(sae.decode(sae.encode_sparse(one)), ref_decode(sae, ref_codes(sae, one)))
        empty = sae.encode_sparse(torch.zeros(0, 4, D_IN))
        assert empty.values.shape[:2] == (0, 4)
        assert sae.decode(empty).shape == (0, 4, D_IN)


@pytest.mark.parametrize("arch", ARCHS)
def test_bfloat16_is_close_to_float32(arch: str) -> None:
    sae = make_sae(arch)
    x = inputs(64)
    with torch.no_grad():
        recon32 = sae.decode(sae.encode_sparse(x))
        sae16 = sae.to(torch.bfloat16)
        codes16 = sae16.encode_sparse(x)
        recon16 = sae16.decode(codes16)
        assert codes16.values.dtype == recon16.dtype == torch.bfloat16
        assert close(sae16.decode(sae16.encode(x)), recon16, atol=0.05)
    err = (recon16.float() - recon32).norm() / recon32.norm()
    # AbsTopK ranks magnitudes of both signs: more near-ties for bfloat16 rounding to flip.
    bound = 0.1 if arch == "abstopk" else 0.05
    assert err < bound, f"bfloat16 relative error {err:.3f}"


@pytest.mark.parametrize("rescale", [False, True])
def test_topk_ranked_in_bfloat16_picks_the_float32_top_k(rescale: bool) -> None:
    """A float32 TopK SAE on a device with fast bfloat16 ranks candidates in bfloat16
    and decides among them in float32: the same features and values as float32."""
    sae = make_sae("topk", rescale_acts_by_decoder_norm=rescale)
    assert isinstance(sae, TopKSAE)
    x = inputs(2000, seed=5)
    with torch.no_grad():
        values, indices = sae.select_ranked(x)
        want_values, want_indices = sae.pre_acts(x).topk(K, dim=-1)
        codes = sae.encode_sparse(x)  # ranked so where bfloat16 is fast (>= 1,024 rows)
    assert torch.equal(indices, want_indices) and torch.equal(codes.indices, want_indices)
    assert close(values, want_values.relu(), atol=1e-5)
    assert close(codes.values, want_values.relu(), atol=1e-5)


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_and_dense_paths_give_the_same_gradients(arch: str) -> None:
    sae = make_sae(arch).train()
    x = inputs(8)
    grads = []
    for codes in (lambda: sae.encode(x), lambda: sae.encode_sparse(x)):
        sae.zero_grad()
        ((sae.decode(codes()) - x) ** 2).sum().backward()
        assert sae.W_enc.grad is not None and sae.W_dec.grad is not None
        grads.append((sae.W_enc.grad.clone(), sae.W_dec.grad.clone()))
    assert close(grads[0][0], grads[1][0], atol=1e-4)
    assert close(grads[0][1], grads[1][1], atol=1e-4)


# -- BatchTopK and Matryoshka ------------------------------------------------------------


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka"])
def test_batchtopk_training_keeps_k_per_row_on_average(arch: str) -> None:
    sae = make_sae(arch)
    assert not sae.training  # inference is the default
    sae.train()
    x = inputs(4, 5)
    with torch.no_grad():
        f = sae.encode(x)
        assert int((f != 0).sum()) == K * 20
        assert close(f, ref_codes(sae, x))
        row_counts = (f != 0).sum(dim=-1)
        assert row_counts.min() < row_counts.max()  # unlike TopK, rows differ
        codes = sae.encode_sparse(x)
        assert codes.values.shape[-1] == int(row_counts.max())
        assert int((codes.values != 0).sum()) == K * 20
        assert close(sae.decode(codes), sae.decode(f))


def test_batchtopk_eval_uses_the_threshold_not_the_batch() -> None:
    sae = make_batchtopk()
    x = inputs(6)
    with torch.no_grad():
        sae.threshold.fill_(0.5)
        f = sae.encode(x)
        assert close(f, ref_codes(sae, x))
        assert close(sae.encode(x[:1]), f[:1])  # a row's code ignores the other rows
        sae.threshold.fill_(-1.0)  # below zero acts as zero: plain ReLU
        assert close(sae.encode(x), torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc))


def test_batchtopk_threshold_is_the_mean_of_batch_minima() -> None:
    """Bussmann et al. 2024: θ = average over batches of the smallest kept activation."""
    sae = make_batchtopk().train()
    minima = []
    with torch.no_grad():
        for seed in range(3):
            f = sae.encode(inputs(16, seed=seed))
            minima.append(float(f[f > 0].min()))
            sae.update_threshold_(f if seed else sae.encode_sparse(inputs(16, seed=seed)))
        assert sae.threshold_batches == 3
        assert sae.threshold.item() == pytest.approx(sum(minima) / 3, rel=1e-5)
        before = sae.threshold.item()
        f = sae.encode(inputs(16, seed=9))
        sae.update_threshold_(f, lr=0.01)  # exponential moving average, as SAELens
        expected = 0.99 * before + 0.01 * float(f[f > 0].min())
        assert sae.threshold.item() == pytest.approx(expected, rel=1e-5)


def test_batchtopk_accepts_a_per_feature_threshold() -> None:
    """SAELens stores BatchTopK's θ as [d_sae]; load_state_dict adopts either shape."""
    sae = make_batchtopk()
    state = {name: t.clone() for name, t in sae.state_dict().items()}
    state["threshold"] = 0.6 * torch.rand(D_SAE, generator=torch.Generator().manual_seed(5))
    sae.load_state_dict(state)
    assert sae.threshold.shape == (D_SAE,)
    x = inputs(10)
    with torch.no_grad():
        assert close(sae.encode(x), ref_codes(sae, x))
        assert close(sae.decode(sae.encode_sparse(x)), sae.decode(sae.encode(x)))
        sae.load_state_dict({**state, "threshold": torch.tensor(0.2)})
    assert sae.threshold.shape == ()
    with pytest.raises(SAEError, match="scalar or have shape"):
        sae.set_threshold_(torch.zeros(3))


@pytest.mark.parametrize("form", ["dense", "sparse"])
def test_matryoshka_prefix_reconstructions(form: str) -> None:
    sae = make_sae("matryoshka", rescale_acts_by_decoder_norm=True)
    assert isinstance(sae, MatryoshkaSAE)
    x = inputs(9)
    with torch.no_grad():
        f = sae.encode(x)
        codes: torch.Tensor | SparseCodes = f if form == "dense" else sae.encode_sparse(x)
        recons = sae.prefix_reconstructions(codes)
        assert len(recons) == len(WIDTHS)
        for width, recon in zip(WIDTHS, recons, strict=True):
            prefix = f * (torch.arange(D_SAE) < width)
            assert close(recon, ref_decode(sae, prefix))
        assert close(recons[-1], sae.decode(f))


# -- configuration and input errors ------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"architecture": "topk"}, "needs k"),
        ({"architecture": "topk", "k": D_SAE + 1}, "between 1 and d_sae"),
        ({"architecture": "batchtopk"}, "needs k"),
        ({"architecture": "matryoshka", "k": K}, "needs matryoshka_widths"),
        ({"architecture": "matryoshka", "k": K, "matryoshka_widths": [8, 32]}, "end at d_sae"),
        (
            {"architecture": "matryoshka", "k": K, "matryoshka_widths": [40, 12, D_SAE]},
            "strictly increasing",
        ),
        ({"architecture": "matryoshka", "k": K, "matryoshka_widths": [0, D_SAE]}, "positive"),
    ],
)
def test_bad_configs_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SAEError, match=message):
        build_sae(SAEConfig(d_in=D_IN, d_sae=D_SAE, **fields))


@pytest.mark.parametrize("arch", ARCHS)
def test_wrong_input_width_is_refused(arch: str) -> None:
    sae = make_sae(arch)
    bad = torch.zeros(2, D_IN + 1)
    with pytest.raises(SAEError, match="does not match the SAE's d_in"):
        sae.encode(bad)
    with pytest.raises(SAEError, match="does not match the SAE's d_in"):
        sae.encode_sparse(bad)


def test_unknown_architecture_lists_the_known_ones() -> None:
    with pytest.raises(SAEError, match="known: abstopk, batchtopk, gated, groupmax, jumprelu"):
        build_sae(SAEConfig(architecture="relu2", d_in=D_IN, d_sae=D_SAE))


def test_tensor_names_follow_saelens() -> None:
    transcoders = [name for name in architectures() if name.endswith("transcoder")]
    assert len(transcoders) == 6  # tests/sae/test_transcoders.py
    assert sorted(architectures()) == sorted(ARCHS + transcoders)
    base = {"W_enc", "W_dec", "b_enc", "b_dec"}
    expected = {
        "standard": base,
        "topk": base,
        "batchtopk": base | {"threshold"},
        "matryoshka": base | {"threshold"},
        "jumprelu": base | {"threshold"},
        "gated": {"W_enc", "W_dec", "b_dec", "b_gate", "r_mag", "b_mag"},  # no b_enc
        "abstopk": base,
        "groupmax": base,
    }
    for arch in ARCHS:
        sae = make_sae(arch)
        assert set(sae.tensors()) == expected[arch], arch
        assert set(type(sae).extra_tensors) <= expected[arch] - base
