"""SAE file formats: SAELens (load + save), sparsify and dictionary_learning (load).

Every file here is written by hand from the formats' published tensor names, shapes and
config fields (no dependency on those libraries), and every loaded SAE is checked
against the format's own encode/decode formula, written out in this file.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from sae import SAEConfig, SAEError, SparseAutoencoder, SparseCodes, build_sae, load_sae, save_sae
from sae.formats.saelens import hook_name_from_hookpoint, hookpoint_from_hook_name
from tests.sae_helpers import sparsify_cfg as shared_sparsify_cfg

D_IN, D_SAE, K = 8, 32, 4


def rand(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def inputs(n: int = 6, seed: int = 99) -> torch.Tensor:
    return rand(n, D_IN, seed=seed, scale=2.0)


# -- reference formulas (independent of sae/) -------------------------------------------


def ref_pre(
    x: torch.Tensor,
    w_enc: torch.Tensor,
    b_enc: torch.Tensor,
    b_dec: torch.Tensor,
    centre: bool = True,
) -> torch.Tensor:
    return (x - b_dec if centre else x) @ w_enc + b_enc


def ref_topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


def ref_jumprelu(pre: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return pre.relu() * (pre > threshold)


def ref_gated(
    x: torch.Tensor,
    w_enc: torch.Tensor,
    b_gate: torch.Tensor,
    r_mag: torch.Tensor,
    b_mag: torch.Tensor,
    b_dec: torch.Tensor,
) -> torch.Tensor:
    x_in = x - b_dec
    gate = (x_in @ w_enc + b_gate) > 0
    return gate * (x_in @ (w_enc * r_mag.exp()) + b_mag).relu()


def check_sae(
    sae: SparseAutoencoder, x: torch.Tensor, codes: torch.Tensor, recon_from_codes: Any
) -> None:
    """encode, encode_sparse and decode of `sae` agree with the reference."""
    torch.testing.assert_close(sae.encode(x), codes, rtol=1e-5, atol=1e-5)
    assert int((codes != 0).sum()) > 0, "the reference codes should not be all zero"
    torch.testing.assert_close(sae.decode(codes), recon_from_codes(codes), rtol=1e-5, atol=1e-5)
    sparse = sae.encode_sparse(x)
    assert isinstance(sparse, SparseCodes)
    torch.testing.assert_close(sae.decode(sparse), recon_from_codes(codes), rtol=1e-5, atol=1e-5)


# -- writers ----------------------------------------------------------------------------


def write_saelens(folder: Path, cfg: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(folder / "sae_weights.safetensors")
    )
    return folder


def base_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    return {
        "W_enc": rand(D_IN, D_SAE, seed=seed),
        "b_enc": rand(D_SAE, seed=seed + 1, scale=0.1),
        "W_dec": rand(D_SAE, D_IN, seed=seed + 2),
        "b_dec": rand(D_IN, seed=seed + 3, scale=0.5),
    }


def modern_cfg(architecture: str = "standard", **fields: Any) -> dict[str, Any]:
    meta = {
        "model_name": "gpt2-small",
        "hook_name": "blocks.6.hook_resid_post",
        "model_class_name": "HookedTransformer",
        "hook_head_index": None,
        "model_from_pretrained_kwargs": {"center_writing_weights": False},
        "prepend_bos": True,
        "exclude_special_tokens": False,
        "neuronpedia_id": "gpt2-small/6-res-jb",
        "context_size": 128,
        "seqpos_slice": [None],
        "dataset_path": "Skylion007/openwebtext",
        "sae_lens_version": "6.5.1",
        "sae_lens_training_version": "6.5.1",
        "lab_notes": {"who": "someone", "why": 42},  # unknown metadata: must survive
    }
    cfg = {
        "architecture": architecture,
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cuda",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": meta,
        "l1_coefficient": 5.0,  # an unknown (training) field: must survive
    }
    cfg.update(fields)
    return cfg


def legacy_cfg(**fields: Any) -> dict[str, Any]:
    cfg = {
        "architecture": "standard",
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "torch.float32",
        "device": "cpu",
        "model_name": "gpt2-small",
        "hook_point": "blocks.3.hook_mlp_out",
        "hook_point_layer": 3,
        "hook_point_head_index": None,
        "activation_fn_str": "relu",
        "apply_b_dec_to_input": True,
        "finetuning_scaling_factor": False,
        "sae_lens_training_version": "3.5.0",
        "prepend_bos": True,
        "dataset_path": "apollo-research/Skylion007-openwebtext-tokenizer-gpt2",
        "dataset_trust_remote_code": True,
        "context_size": 128,
        "normalize_activations": False,
    }
    cfg.update(fields)
    return cfg


def standard_reference(t: dict[str, torch.Tensor], centre: bool = True) -> tuple[Any, Any]:
    def codes(x: torch.Tensor) -> torch.Tensor:
        return ref_pre(x, t["W_enc"], t["b_enc"], t["b_dec"], centre).relu()

    return codes, lambda f: f @ t["W_dec"] + t["b_dec"]


def assert_same_sae(a: SparseAutoencoder, b: SparseAutoencoder) -> None:
    assert a.cfg == b.cfg
    ta, tb = a.tensors(), b.tensors()
    assert ta.keys() == tb.keys()
    for name in ta:
        assert ta[name].dtype == tb[name].dtype, name
        assert torch.equal(ta[name], tb[name]), name


# == SAELens ============================================================================


def test_saelens_modern_standard_matches_formula_and_keeps_metadata(tmp_path: Path) -> None:
    t = base_tensors()
    sae = load_sae(write_saelens(tmp_path / "sae", modern_cfg(), t))
    assert sae.cfg.architecture == "standard"
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.model_name) == (D_IN, D_SAE, "gpt2-small")
    assert sae.cfg.hookpoint == "layers.6"
    assert sae.cfg.metadata["hook_name"] == "blocks.6.hook_resid_post"
    kept = sae.cfg.metadata["saelens"]
    assert kept["metadata"]["lab_notes"] == {"who": "someone", "why": 42}
    assert kept["metadata"]["neuronpedia_id"] == "gpt2-small/6-res-jb"
    assert kept["extra"] == {"l1_coefficient": 5.0}
    assert not sae.training
    codes, recon = standard_reference(t)
    x = inputs()
    check_sae(sae, x, codes(x), recon)


def test_saelens_topk_with_rescale_acts_by_decoder_norm(tmp_path: Path) -> None:
    t = base_tensors(seed=10)
    t["W_dec"] = t["W_dec"] * rand(D_SAE, 1, seed=11).abs().add(0.2)  # non-unit rows
    cfg = modern_cfg("topk", k=K, rescale_acts_by_decoder_norm=True)
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, t))
    assert (sae.cfg.k, sae.cfg.rescale_acts_by_decoder_norm) == (K, True)
    norms = t["W_dec"].norm(dim=-1)
    x = inputs()
    codes = ref_topk(ref_pre(x, t["W_enc"], t["b_enc"], t["b_dec"]) * norms, K)
    check_sae(sae, x, codes, lambda f: (f / norms) @ t["W_dec"] + t["b_dec"])


def test_saelens_jumprelu_without_b_dec_on_input(tmp_path: Path) -> None:
    t = base_tensors(seed=20)
    t["threshold"] = rand(D_SAE, seed=21).abs()
    cfg = modern_cfg("jumprelu", apply_b_dec_to_input=False)
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, t))
    assert sae.cfg.apply_b_dec_to_input is False
    x = inputs()
    codes = ref_jumprelu(ref_pre(x, t["W_enc"], t["b_enc"], t["b_dec"], False), t["threshold"])
    check_sae(sae, x, codes, lambda f: f @ t["W_dec"] + t["b_dec"])


def test_saelens_log_threshold_is_exponentiated(tmp_path: Path) -> None:
    t = base_tensors(seed=30)
    threshold = rand(D_SAE, seed=31).abs() + 0.05
    t["log_threshold"] = threshold.log()
    sae = load_sae(write_saelens(tmp_path / "sae", modern_cfg("jumprelu"), t))
    torch.testing.assert_close(sae.tensors()["threshold"], threshold)
    x = inputs()
    codes = ref_jumprelu(ref_pre(x, t["W_enc"], t["b_enc"], t["b_dec"]), threshold)
    check_sae(sae, x, codes, lambda f: f @ t["W_dec"] + t["b_dec"])


def test_saelens_gated(tmp_path: Path) -> None:
    t = base_tensors(seed=40)
    del t["b_enc"]  # SAELens' gated SAE has no b_enc
    t |= {
        "b_gate": rand(D_SAE, seed=41, scale=0.5),
        "r_mag": rand(D_SAE, seed=42, scale=0.3),
        "b_mag": rand(D_SAE, seed=43, scale=0.5),
    }
    sae = load_sae(write_saelens(tmp_path / "sae", modern_cfg("gated"), t))
    x = inputs()
    codes = ref_gated(x, t["W_enc"], t["b_gate"], t["r_mag"], t["b_mag"], t["b_dec"])
    check_sae(sae, x, codes, lambda f: f @ t["W_dec"] + t["b_dec"])


@pytest.mark.parametrize(
    ("theirs", "ours", "extra"),
    [
        ("batchtopk", "batchtopk", {}),
        ("matryoshka_batchtopk", "matryoshka", {"matryoshka_widths": [8, 16]}),
    ],
)
def test_saelens_batchtopk_training_checkpoints(
    tmp_path: Path, theirs: str, ours: str, extra: dict[str, Any]
) -> None:
    t = base_tensors(seed=50)
    t["topk_threshold"] = torch.tensor(0.7, dtype=torch.float64)  # SAELens: a double scalar
    cfg = modern_cfg(theirs, k=float(K), topk_threshold_lr=0.01, **extra)
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, t))
    assert (sae.cfg.architecture, sae.cfg.k) == (ours, K)
    if ours == "matryoshka":
        assert sae.cfg.matryoshka_widths == [8, 16, D_SAE]  # SAELens appends d_sae
    x = inputs()
    codes = ref_jumprelu(ref_pre(x, t["W_enc"], t["b_enc"], t["b_dec"]), torch.tensor(0.7))
    check_sae(sae, x, codes, lambda f: f @ t["W_dec"] + t["b_dec"])


def test_saelens_legacy_flat_config(tmp_path: Path) -> None:
    t = base_tensors(seed=60)
    sae = load_sae(write_saelens(tmp_path / "sae", legacy_cfg(), t))
    assert sae.cfg.architecture == "standard"
    assert sae.cfg.hookpoint == "layers.3.mlp"
    assert sae.cfg.model_name == "gpt2-small"
    assert sae.cfg.metadata["hook_name"] == "blocks.3.hook_mlp_out"
    kept = sae.cfg.metadata["saelens"]
    assert kept["extra"] == {"hook_point_layer": 3, "dataset_trust_remote_code": True}
    assert kept["metadata"]["sae_lens_training_version"] == "3.5.0"
    codes, recon = standard_reference(t)
    x = inputs()
    check_sae(sae, x, codes(x), recon)


def test_saelens_legacy_topk_activation(tmp_path: Path) -> None:
    t = base_tensors(seed=70)
    cfg = legacy_cfg(activation_fn_str="topk", activation_fn_kwargs={"k": K})
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, t))
    assert (sae.cfg.architecture, sae.cfg.k) == ("topk", K)
    x = inputs()
    codes = ref_topk(ref_pre(x, t["W_enc"], t["b_enc"], t["b_dec"]), K)
    check_sae(sae, x, codes, lambda f: f @ t["W_dec"] + t["b_dec"])


def test_saelens_legacy_finetuning_scaling_factor_is_folded(tmp_path: Path) -> None:
    t = base_tensors(seed=80)
    scale = rand(D_SAE, seed=81).abs() + 0.5
    cfg = legacy_cfg(finetuning_scaling_factor=True)
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, {**t, "scaling_factor": scale}))
    codes, _ = standard_reference(t)
    x = inputs()
    check_sae(sae, x, codes(x), lambda f: (f * scale) @ t["W_dec"] + t["b_dec"])
    # A factor of ones is dropped, as SAELens does.
    plain = load_sae(
        write_saelens(tmp_path / "ones", legacy_cfg(), {**t, "scaling_factor": torch.ones(D_SAE)})
    )
    assert torch.equal(plain.tensors()["W_dec"], t["W_dec"])


def test_saelens_expected_average_only_in_folds_the_scaler(tmp_path: Path) -> None:
    t = base_tensors(seed=90)
    s = 0.37
    folder = write_saelens(
        tmp_path / "ckpt", modern_cfg(normalize_activations="expected_average_only_in"), t
    )
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": s}))
    sae = load_sae(folder)
    assert sae.cfg.metadata["folded_norm_scaling_factor"] == s
    x = inputs()
    codes = ref_pre(x * s, t["W_enc"], t["b_enc"], t["b_dec"]).relu()  # the SAE sees x * s
    check_sae(sae, x, codes, lambda f: (f @ t["W_dec"] + t["b_dec"]) / s)


@pytest.mark.parametrize(
    ("hook_name", "hookpoint"),
    [
        ("blocks.6.hook_resid_post", "layers.6"),
        ("blocks.2.hook_mlp_out", "layers.2.mlp"),
        ("blocks.11.hook_attn_out", "layers.11.attn"),
        ("blocks.7.hook_resid_pre", "layers.6"),
        ("blocks.0.hook_resid_pre", "embed"),  # the embeddings
        ("blocks.4.hook_resid_mid", "layers.4.resid_mid"),
        ("blocks.4.attn.hook_z", "layers.4.attn.z"),
    ],
)
def test_hook_names_map_to_hookpoints(
    tmp_path: Path, hook_name: str, hookpoint: str | None
) -> None:
    assert hookpoint_from_hook_name(hook_name) == hookpoint
    cfg = modern_cfg()
    cfg["metadata"]["hook_name"] = hook_name
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, base_tensors()))
    assert sae.cfg.hookpoint == hookpoint
    assert sae.cfg.metadata["hook_name"] == hook_name
    save_sae(sae, tmp_path / "saved")
    written = json.loads((tmp_path / "saved" / "cfg.json").read_text())
    assert written["metadata"]["hook_name"] == hook_name  # the original is written back


def test_hookpoints_map_to_hook_names() -> None:
    assert hook_name_from_hookpoint("layers.6") == "blocks.6.hook_resid_post"
    assert hook_name_from_hookpoint("layers.6.mlp") == "blocks.6.hook_mlp_out"
    assert hook_name_from_hookpoint("layers.6.attn") == "blocks.6.hook_attn_out"
    assert hook_name_from_hookpoint("embed") == "blocks.0.hook_resid_pre"
    assert hook_name_from_hookpoint("layers.6.mlp_in") == "blocks.6.ln2.hook_normalized"
    assert hook_name_from_hookpoint("nowhere") is None


def test_an_unknown_hook_name_is_refused_at_load(tmp_path: Path) -> None:
    assert hookpoint_from_hook_name("hook_embed") is None
    cfg = modern_cfg()
    cfg["metadata"]["hook_name"] = "hook_embed"
    with pytest.raises(SAEError, match="unknown hook name 'hook_embed'"):
        load_sae(write_saelens(tmp_path / "sae", cfg, base_tensors()))


def round_trip_cases() -> dict[str, tuple[dict[str, Any], dict[str, torch.Tensor]]]:
    t = base_tensors(seed=100)
    jump = {**base_tensors(seed=101), "log_threshold": rand(D_SAE, seed=102).abs().log()}
    gated = {k: v for k, v in base_tensors(seed=103).items() if k != "b_enc"}
    gated |= {
        name: rand(D_SAE, seed=104 + i) for i, name in enumerate(("b_gate", "r_mag", "b_mag"))
    }
    batch = {**base_tensors(seed=110), "topk_threshold": torch.tensor(0.5, dtype=torch.float64)}
    per_feature = {**base_tensors(seed=111), "threshold": rand(D_SAE, seed=112).abs()}
    resid_pre_0 = modern_cfg()
    resid_pre_0["metadata"]["hook_name"] = "blocks.0.hook_resid_pre"
    unversioned = modern_cfg(metadata={"hook_name": "blocks.1.hook_resid_post"})  # read as pre-6.0
    return {
        "modern-standard": (modern_cfg(), t),
        "modern-topk-rescaled": (modern_cfg("topk", k=K, rescale_acts_by_decoder_norm=True), t),
        "no-b-dec-on-input": (modern_cfg("topk", k=K, apply_b_dec_to_input=False), t),
        "legacy-standard": (legacy_cfg(), t),
        "legacy-topk": (legacy_cfg(activation_fn_str="topk", activation_fn_kwargs={"k": K}), t),
        "log-threshold": (modern_cfg("jumprelu"), jump),
        "gated": (modern_cfg("gated"), gated),
        "batchtopk": (modern_cfg("batchtopk", k=K), batch),
        "batchtopk-per-feature": (modern_cfg("batchtopk", k=K), per_feature),
        "matryoshka": (modern_cfg("matryoshka_batchtopk", k=K, matryoshka_widths=[8, 32]), batch),
        "resid-pre-0": (resid_pre_0, t),
        "no-version": (unversioned, t),
    }


@pytest.mark.parametrize("case", sorted(round_trip_cases()))
def test_saelens_round_trip_is_exact(tmp_path: Path, case: str) -> None:
    cfg, tensors = round_trip_cases()[case]
    first = load_sae(write_saelens(tmp_path / "in", cfg, tensors))
    save_sae(first, tmp_path / "out")
    second = load_sae(tmp_path / "out")
    assert_same_sae(first, second)
    written = json.loads((tmp_path / "out" / "cfg.json").read_text())
    # A valid SAELens >= 6 config: the fields SAELens' SAEConfig reads.
    for key in ("architecture", "d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input"):
        assert key in written
    assert written["normalize_activations"] == "none"
    assert written["reshape_activations"] == "none"
    assert int(written["metadata"]["sae_lens_version"].split(".")[0]) >= 6
    assert "hook_name" in written["metadata"] and "model_name" in written["metadata"]
    if written["architecture"] in ("topk", "batchtopk", "matryoshka_batchtopk"):
        assert written["k"] == K
    save_sae(second, tmp_path / "again")
    assert json.loads((tmp_path / "again" / "cfg.json").read_text()) == written


@pytest.mark.parametrize(
    "architecture", ["standard", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"]
)
def test_save_then_load_our_own_saes(tmp_path: Path, architecture: str) -> None:
    cfg = SAEConfig(
        architecture=architecture,
        d_in=D_IN,
        d_sae=D_SAE,
        k=K if architecture in ("topk", "batchtopk", "matryoshka") else None,
        matryoshka_widths=[8, D_SAE] if architecture == "matryoshka" else None,
        hookpoint="layers.2",
        model_name="SmolLM2-135M",
        metadata={"trained_tokens": 1000, "explained_variance": 0.8},
    )
    sae = build_sae(cfg)
    sae.init_weights(seed=3)
    with torch.no_grad():
        for i, tensor in enumerate(sae.tensors().values()):
            tensor.add_(rand(*tensor.shape, seed=200 + i, scale=0.1))
    folder = save_sae(sae, tmp_path / "mine")
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    back = load_sae(folder)
    assert back.cfg.metadata.pop("hook_name") == "blocks.2.hook_resid_post"
    assert_same_sae(sae, back)


@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "gated"])
def test_rescaled_standard_family_is_folded_on_save(tmp_path: Path, architecture: str) -> None:
    """SAELens' standard/jumprelu/gated configs lack rescale_acts_by_decoder_norm: the
    saved SAE computes the same function without it."""
    cfg = SAEConfig(
        architecture=architecture, d_in=D_IN, d_sae=D_SAE, rescale_acts_by_decoder_norm=True
    )
    sae = build_sae(cfg)
    with torch.no_grad():
        for i, tensor in enumerate(sae.tensors().values()):
            tensor.copy_(rand(*tensor.shape, seed=300 + i, scale=0.5))
        if architecture == "jumprelu":
            sae.tensors()["threshold"].abs_()
    back = load_sae(save_sae(sae, tmp_path / "folded"))
    assert back.cfg.rescale_acts_by_decoder_norm is False
    x = inputs()
    torch.testing.assert_close(back.encode(x), sae.encode(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(back(x), sae(x), rtol=1e-5, atol=1e-5)


def test_dtype_and_device(tmp_path: Path) -> None:
    t = {k: v.to(torch.float16) for k, v in base_tensors().items()}
    folder = write_saelens(tmp_path / "sae", modern_cfg(dtype="float16"), t)
    assert load_sae(folder).dtype == torch.float16  # the file's dtype
    sae = load_sae(folder, device=torch.device("cpu"), dtype="bfloat16")
    assert sae.dtype == torch.bfloat16 and sae.cfg.dtype == "bfloat16"
    assert all(v.dtype == torch.bfloat16 for v in sae.tensors().values())
    assert sae.device == torch.device("cpu")
    assert load_sae(folder, dtype=torch.float32).cfg.dtype == "float32"
    assert load_sae(folder / "cfg.json").dtype == torch.float16  # a file names its folder


def test_save_replaces_atomically_and_refuses_a_file(tmp_path: Path) -> None:
    first = load_sae(write_saelens(tmp_path / "a", modern_cfg(), base_tensors(seed=1)))
    second = load_sae(write_saelens(tmp_path / "b", modern_cfg(), base_tensors(seed=2)))
    save_sae(first, tmp_path / "out")
    save_sae(second, tmp_path / "out")
    assert_same_sae(load_sae(tmp_path / "out"), second)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "cfg.json",
        "sae_weights.safetensors",
    ]
    (tmp_path / "file").write_text("x")
    with pytest.raises(SAEError, match="is a file"):
        save_sae(first, tmp_path / "file")
    bad = build_sae(SAEConfig(architecture="standard", d_in=D_IN, d_sae=D_SAE))
    bad.cfg.metadata["when"] = object()
    with pytest.raises(SAEError, match="config is not plain JSON"):
        save_sae(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("keep me")
    with pytest.raises(SAEError, match=r"holds other files \(notes\.txt\)"):
        save_sae(first, tmp_path / "data")
    assert (tmp_path / "data" / "notes.txt").read_text() == "keep me"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["a", "b", "data", "file", "out"]  # no temporary folders left behind


# == sparsify ===========================================================================


def sparsify_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    return {
        "encoder.weight": rand(D_SAE, D_IN, seed=seed),
        "encoder.bias": rand(D_SAE, seed=seed + 1, scale=0.1),
        "W_dec": rand(D_SAE, D_IN, seed=seed + 2),
        "b_dec": rand(D_IN, seed=seed + 3, scale=0.5),
    }


def sparsify_cfg(**fields: Any) -> dict[str, Any]:
    return shared_sparsify_cfg(D_IN, D_SAE, K, **fields)


def write_sparsify(folder: Path, cfg: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(tensors, str(folder / "sae.safetensors"))
    return folder


def test_sparsify_matches_formula(tmp_path: Path) -> None:
    t = sparsify_tensors(seed=400)
    run = tmp_path / "run"
    folder = write_sparsify(run / "layers.3", sparsify_cfg(), t)
    (run / "config.json").write_text(
        json.dumps({"model": "EleutherAI/pythia-70m", "batch_size": 8})
    )
    sae = load_sae(folder)
    assert (sae.cfg.architecture, sae.cfg.k, sae.cfg.apply_b_dec_to_input) == ("topk", K, True)
    assert (sae.cfg.hookpoint, sae.cfg.model_name) == ("layers.3", "EleutherAI/pythia-70m")
    assert sae.cfg.metadata["sparsify"]["hookpoint"] == "layers.3"
    x = inputs()
    # sparsify: top_k(relu(encoder(x - b_dec))), then sum of acts * W_dec rows + b_dec.
    pre = ((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"]).relu()
    values, indices = pre.topk(K, dim=-1)
    codes = torch.zeros_like(pre).scatter(-1, indices, values)
    check_sae(sae, x, codes, lambda f: f @ t["W_dec"] + t["b_dec"])


def test_sparsify_without_d_in_in_cfg(tmp_path: Path) -> None:
    cfg = sparsify_cfg()
    del cfg["d_in"]
    sae = load_sae(write_sparsify(tmp_path / "layers.5.mlp", cfg, sparsify_tensors()))
    assert (sae.cfg.d_in, sae.cfg.hookpoint) == (D_IN, "layers.5.mlp")


def test_sparsify_checkpoint_folder_asks_to_choose(tmp_path: Path) -> None:
    for name in ("layers.2", "layers.4"):
        write_sparsify(tmp_path / "run" / name, sparsify_cfg(), sparsify_tensors())
    (tmp_path / "run" / "config.json").write_text("{}")
    with pytest.raises(SAEError, match=r"one SAE per hookpoint \(layers\.2, layers\.4\)"):
        load_sae(tmp_path / "run")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"transcode": True}, "a transcoder on 'layers.1'; glossator reads transcoders of an MLP"),
        ({"activation": "signed_topk"}, "activation 'signed_topk'"),
        ({"k": None}, "required field 'k'"),
        ({"d_in": 16}, "d_in=16 but encoder.weight has d_in=8"),
        ({"num_latents": 64}, "asks for 64 latents"),
    ],
)
def test_sparsify_refusals(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    folder = write_sparsify(tmp_path / "layers.1", sparsify_cfg(**fields), sparsify_tensors())
    with pytest.raises(SAEError, match=message):
        load_sae(folder)


# == dictionary_learning ================================================================


def write_dl(folder: Path, dict_class: str, state: dict[str, torch.Tensor], **trainer: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "trainer": {
            "trainer_class": "SomeTrainer",
            "dict_class": dict_class,
            "activation_dim": D_IN,
            "dict_size": D_SAE,
            "layer": 3,
            "lm_name": "EleutherAI/pythia-70m-deduped",
            "submodule_name": "resid_post_layer_3",
            "lr": 1e-3,
            **trainer,
        },
        "buffer": {"d_submodule": D_IN, "ctx_len": 128},
    }
    (folder / "config.json").write_text(json.dumps(config))
    torch.save(state, folder / "ae.pt")
    return folder


def linear_state(seed: int) -> dict[str, torch.Tensor]:
    return {
        "encoder.weight": rand(D_SAE, D_IN, seed=seed),
        "encoder.bias": rand(D_SAE, seed=seed + 1, scale=0.1),
        "decoder.weight": rand(D_IN, D_SAE, seed=seed + 2),
    }


def param_state(seed: int) -> dict[str, torch.Tensor]:
    return {
        "W_enc": rand(D_IN, D_SAE, seed=seed),
        "b_enc": rand(D_SAE, seed=seed + 1, scale=0.1),
        "W_dec": rand(D_SAE, D_IN, seed=seed + 2),
        "b_dec": rand(D_IN, seed=seed + 3, scale=0.5),
    }


def test_dl_autoencoder(tmp_path: Path) -> None:
    s = {**linear_state(500), "bias": rand(D_IN, seed=504)}
    # Unit decoder columns: read as saved (other norms: tests/sae/test_formats_peers.py).
    s["decoder.weight"] = s["decoder.weight"] / s["decoder.weight"].norm(dim=0)
    sae = load_sae(write_dl(tmp_path / "ae", "AutoEncoder", s))
    assert (sae.cfg.architecture, sae.cfg.hookpoint) == ("standard", "layers.3")
    assert sae.cfg.model_name == "EleutherAI/pythia-70m-deduped"
    assert sae.cfg.metadata["dictionary_learning"]["config"]["trainer"]["lr"] == 1e-3
    x = inputs()
    codes = ((x - s["bias"]) @ s["encoder.weight"].T + s["encoder.bias"]).relu()
    check_sae(sae, x, codes, lambda f: f @ s["decoder.weight"].T + s["bias"])


def test_dl_autoencoder_new(tmp_path: Path) -> None:
    s = {**linear_state(510), "decoder.bias": rand(D_IN, seed=514)}
    sae = load_sae(write_dl(tmp_path / "ae", "AutoEncoderNew", s))
    x = inputs()
    codes = (x @ s["encoder.weight"].T + s["encoder.bias"]).relu()
    check_sae(sae, x, codes, lambda f: f @ s["decoder.weight"].T + s["decoder.bias"])


def topk_state(seed: int, threshold: float) -> dict[str, torch.Tensor]:
    return {
        **linear_state(seed),
        "b_dec": rand(D_IN, seed=seed + 5, scale=0.5),
        "k": torch.tensor(K, dtype=torch.int),
        "threshold": torch.tensor(threshold, dtype=torch.float32),
    }


def test_dl_autoencoder_topk(tmp_path: Path) -> None:
    s = topk_state(520, threshold=-1.0)
    sae = load_sae(write_dl(tmp_path / "ae", "AutoEncoderTopK", s, k=K))
    assert (sae.cfg.architecture, sae.cfg.k) == ("topk", K)
    x = inputs()
    pre = ((x - s["b_dec"]) @ s["encoder.weight"].T + s["encoder.bias"]).relu()
    values, indices = pre.topk(K, dim=-1)
    codes = torch.zeros_like(pre).scatter(-1, indices, values)
    check_sae(sae, x, codes, lambda f: f @ s["decoder.weight"].T + s["b_dec"])


def test_dl_batchtopk(tmp_path: Path) -> None:
    s = topk_state(530, threshold=0.6)
    sae = load_sae(write_dl(tmp_path / "ae", "BatchTopKSAE", s, k=K))
    assert (sae.cfg.architecture, sae.cfg.k) == ("batchtopk", K)
    x = inputs()
    post = ((x - s["b_dec"]) @ s["encoder.weight"].T + s["encoder.bias"]).relu()
    codes = post * (post > s["threshold"])  # dictionary_learning's encode(use_threshold=True)
    check_sae(sae, x, codes, lambda f: f @ s["decoder.weight"].T + s["b_dec"])


def test_dl_matryoshka(tmp_path: Path) -> None:
    s = {
        **param_state(540),
        "k": torch.tensor(K, dtype=torch.int),
        "threshold": torch.tensor(0.4),
        "group_sizes": torch.tensor([4, 12, 16]),
    }
    sae = load_sae(write_dl(tmp_path / "ae", "MatryoshkaBatchTopKSAE", s, k=K))
    assert (sae.cfg.architecture, sae.cfg.matryoshka_widths) == ("matryoshka", [4, 16, 32])
    x = inputs()
    post = ((x - s["b_dec"]) @ s["W_enc"] + s["b_enc"]).relu()
    check_sae(sae, x, post * (post > 0.4), lambda f: f @ s["W_dec"] + s["b_dec"])


def test_dl_jumprelu(tmp_path: Path) -> None:
    s = {**param_state(550), "threshold": rand(D_SAE, seed=555).abs()}
    sae = load_sae(write_dl(tmp_path / "ae", "JumpReluAutoEncoder", s))
    assert sae.cfg.apply_b_dec_to_input is False
    x = inputs()
    pre = x @ s["W_enc"] + s["b_enc"]  # dictionary_learning does not centre x here
    codes = (pre * (pre > s["threshold"])).relu()
    check_sae(sae, x, codes, lambda f: f @ s["W_dec"] + s["b_dec"])


def test_dl_gated(tmp_path: Path) -> None:
    s = {
        "decoder_bias": rand(D_IN, seed=560),
        "encoder.weight": rand(D_SAE, D_IN, seed=561),
        "r_mag": rand(D_SAE, seed=562, scale=0.3),
        "gate_bias": rand(D_SAE, seed=563, scale=0.5),
        "mag_bias": rand(D_SAE, seed=564, scale=0.5),
        "decoder.weight": rand(D_IN, D_SAE, seed=565),
    }
    sae = load_sae(write_dl(tmp_path / "ae", "GatedAutoEncoder", s))
    x = inputs()
    x_enc = (x - s["decoder_bias"]) @ s["encoder.weight"].T
    codes = (x_enc + s["gate_bias"] > 0) * (s["r_mag"].exp() * x_enc + s["mag_bias"]).relu()
    check_sae(sae, x, codes, lambda f: f @ s["decoder.weight"].T + s["decoder_bias"])


def test_dl_checkpoint_file_uses_the_run_config(tmp_path: Path) -> None:
    s = {**linear_state(570), "bias": rand(D_IN, seed=574)}
    folder = write_dl(tmp_path / "run", "AutoEncoder", s)
    (folder / "checkpoints").mkdir()
    torch.save(s, folder / "checkpoints" / "ae_100.pt")
    sae = load_sae(folder / "checkpoints" / "ae_100.pt")
    assert sae.cfg.metadata["dictionary_learning"]["file"] == "ae_100.pt"


def test_dl_refusals(tmp_path: Path) -> None:
    s = {**linear_state(580), "bias": rand(D_IN, seed=584)}
    with pytest.raises(SAEError, match=r"'CrossCoder' is not supported; supported: AutoEncoder"):
        load_sae(write_dl(tmp_path / "cc", "CrossCoder", s))
    with pytest.raises(SAEError, match="no inference threshold yet"):
        load_sae(write_dl(tmp_path / "btk", "BatchTopKSAE", topk_state(590, threshold=-1.0)))
    with pytest.raises(SAEError, match=r"buffer k=4 but config\.json says k=8"):
        load_sae(write_dl(tmp_path / "k", "AutoEncoderTopK", topk_state(595, 0.1), k=8))
    no_config = write_dl(tmp_path / "nocfg", "AutoEncoder", s)
    (no_config / "config.json").unlink()
    with pytest.raises(SAEError, match=r"config\.json is missing"):
        load_sae(no_config)
    pickled = write_dl(tmp_path / "pickle", "AutoEncoder", s)
    torch.save({"encoder.weight": object()}, pickled / "ae.pt")  # not weights-only
    with pytest.raises(SAEError, match="not a readable weights-only torch file"):
        load_sae(pickled)


# == bad files ==========================================================================


def good_saelens(tmp_path: Path, **cfg_fields: Any) -> Path:
    return write_saelens(tmp_path / "sae", modern_cfg(**cfg_fields), base_tensors())


def test_missing_paths_and_files(tmp_path: Path) -> None:
    with pytest.raises(SAEError, match="does not exist"):
        load_sae(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SAEError, match=r"no SAE found in .*empty; expected one of"):
        load_sae(tmp_path / "empty")
    folder = good_saelens(tmp_path)
    (folder / "sae_weights.safetensors").unlink()
    with pytest.raises(SAEError, match=r"has cfg\.json but (neither|not) sae_weights\.safetensors"):
        load_sae(folder)
    folder = write_saelens(tmp_path / "nocfg", modern_cfg(), base_tensors())
    (folder / "cfg.json").unlink()
    with pytest.raises(SAEError, match=r"nocfg/cfg\.json is missing"):
        load_sae(folder)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not readable JSON"),
        ("[1, 2]", "must hold a JSON object, found list"),
    ],
)
def test_unreadable_json(tmp_path: Path, text: str, message: str) -> None:
    folder = good_saelens(tmp_path)
    (folder / "cfg.json").write_text(text)
    with pytest.raises(SAEError, match=message):
        load_sae(folder)


def test_corrupt_safetensors(tmp_path: Path) -> None:
    folder = good_saelens(tmp_path)
    (folder / "sae_weights.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(SAEError, match="not a readable safetensors file"):
        load_sae(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d_in": None}, "lacks the required field 'd_in'"),
        (
            {"architecture": "crosscoder"},
            "unknown SAELens architecture 'crosscoder'; known: abstopk, batchtopk, gated",
        ),
        ({"architecture": "topk"}, "a 'topk' SAE needs 'k'"),
        ({"architecture": "topk", "k": 2.5}, "k must be an integer, found 2.5"),
        ({"architecture": "topk", "k": 999}, "k=999 must be between 1 and d_sae=32"),
        ({"dtype": "int8"}, "unsupported dtype 'int8'"),
        ({"normalize_activations": "whiten"}, "unknown normalize_activations='whiten'"),
        ({"normalize_activations": "expected_average_only_in"}, "activation_scaler.json is absent"),
        ({"reshape_activations": "hook_z"}, "reshape_activations='hook_z'"),
    ],
)
def test_bad_configs(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(SAEError, match=message):
        load_sae(good_saelens(tmp_path, **change))


def test_hook_head_index_is_refused(tmp_path: Path) -> None:
    cfg = modern_cfg()
    cfg["metadata"]["hook_head_index"] = 3
    with pytest.raises(SAEError, match="hook_head_index=3"):
        load_sae(write_saelens(tmp_path / "sae", cfg, base_tensors()))


def test_legacy_unknown_activation_is_refused(tmp_path: Path) -> None:
    folder = write_saelens(
        tmp_path / "sae", legacy_cfg(activation_fn_str="tanh-relu"), base_tensors()
    )
    with pytest.raises(SAEError, match=r"unsupported pre-6\.0 SAELens activation 'tanh-relu'"):
        load_sae(folder)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.pop("b_enc"), r"missing tensors \['b_enc'\]"),
        (lambda t: t.update(extra=torch.zeros(3)), r"unexpected tensors \['extra'\]"),
        (
            lambda t: t.update(W_enc=torch.zeros(D_SAE, D_IN)),
            r"tensor 'W_enc' has shape \[32, 8\], expected \[8, 32\]",
        ),
        (lambda t: t["W_dec"].__setitem__((3, 1), math.nan), r"tensor 'W_dec' holds 1 NaN/Inf"),
        (lambda t: t["b_dec"].__setitem__(0, math.inf), r"tensor 'b_dec' holds 1 NaN/Inf"),
    ],
)
def test_bad_tensors(tmp_path: Path, edit: Any, message: str) -> None:
    tensors = base_tensors()
    edit(tensors)
    with pytest.raises(SAEError, match=message):
        load_sae(write_saelens(tmp_path / "sae", modern_cfg(), tensors))


def test_bad_tensors_in_other_formats_name_the_file_tensor(tmp_path: Path) -> None:
    t = sparsify_tensors()
    t["W_dec"][0, 0] = math.nan
    with pytest.raises(SAEError, match=r"sae\.safetensors: tensor 'W_dec' holds 1 NaN"):
        load_sae(write_sparsify(tmp_path / "layers.1", sparsify_cfg(), t))
    s = {**linear_state(600), "bias": rand(D_IN, seed=604)}
    s["decoder.weight"] = torch.zeros(D_SAE, D_IN)
    with pytest.raises(
        SAEError, match=r"'decoder\.weight' has shape \[32, 8\], expected \[8, 32\]"
    ):
        load_sae(write_dl(tmp_path / "dl", "AutoEncoder", s))
    s["decoder.weight"] = torch.zeros(D_IN, D_SAE)
    del s["bias"]
    with pytest.raises(SAEError, match=r"missing \['bias'\]"):
        load_sae(write_dl(tmp_path / "dl2", "AutoEncoder", s))


def test_expected_d_in_mismatch_is_refused_before_reading_weights(tmp_path: Path) -> None:
    folder = good_saelens(tmp_path)
    assert load_sae(folder, expected_d_in=D_IN).d_in == D_IN
    (folder / "sae_weights.safetensors").write_bytes(b"never read")
    message = r"d_in=8, but the model's hookpoint layers\.6 has width 576"
    with pytest.raises(SAEError, match=message):
        load_sae(folder, expected_d_in=576)
    sparse = write_sparsify(tmp_path / "layers.2", sparsify_cfg(), sparsify_tensors())
    with pytest.raises(SAEError, match=r"hookpoint layers\.2 has width 576"):
        load_sae(sparse, expected_d_in=576)
    dl = write_dl(tmp_path / "dl", "AutoEncoder", {**linear_state(610), "bias": rand(D_IN, seed=9)})
    with pytest.raises(SAEError, match=r"hookpoint layers\.3 has width 576"):
        load_sae(dl, expected_d_in=576)


def test_saved_sae_is_readable_by_others_under_the_umask(tmp_path: Path) -> None:
    sae = build_sae(SAEConfig(architecture="topk", d_in=4, d_sae=8, k=2))
    umask = os.umask(0o022)
    try:
        out = save_sae(sae, tmp_path / "sae")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {stat.S_IMODE(f.stat().st_mode) for f in out.iterdir()} == {0o644}
