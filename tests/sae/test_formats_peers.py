"""glossator against the peer libraries' own math, on files written in their formats.

Each peer's formula is written out here from its source (cited per test), never
imported: the peers are not installed in this environment. float32, compared to 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from sae import SAEConfig, SAEError, build_sae, load_sae, save_sae
from sae.architectures import BatchTopKSAE
from tests.sae_helpers import sparsify_cfg

D_IN, D_SAE, K = 8, 32, 4


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to 1e-5 (float32), the issue's bar for agreeing with a peer library."""
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def rand(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def inputs(n: int = 16, seed: int = 99) -> torch.Tensor:
    return rand(n, D_IN, seed=seed, scale=2.0)


# == dictionary_learning: AutoEncoder decoder renormalisation ===========================


def write_dl_autoencoder(folder: Path, state: dict[str, torch.Tensor]) -> Path:
    """ae.pt + config.json as dictionary_learning's trainers save them."""
    folder.mkdir(parents=True)
    trainer = {
        "trainer_class": "StandardTrainerAprilUpdate",
        "dict_class": "AutoEncoder",
        "activation_dim": D_IN,
        "dict_size": D_SAE,
        "lm_name": "EleutherAI/pythia-70m-deduped",
        "submodule_name": "resid_post_layer_3",
    }
    (folder / "config.json").write_text(json.dumps({"trainer": trainer}))
    torch.save(state, folder / "ae.pt")
    return folder


def dl_load_dictionary(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """saprmarks/dictionary_learning, dictionary.py: `AutoEncoder.from_pretrained`
    (normalize_decoder=True, what utils.load_dictionary calls) -> `normalize_decoder`."""
    s = {name: t.clone() for name, t in state.items()}
    norms = torch.norm(s["decoder.weight"], dim=0)
    if torch.allclose(norms, torch.ones_like(norms)):
        return s
    s["decoder.weight"] /= norms
    s["encoder.weight"] *= norms[:, None]
    s["encoder.bias"] *= norms
    return s


def dl_encode(s: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """AutoEncoder.encode: ReLU(encoder(x - bias))."""
    return torch.relu((x - s["bias"]) @ s["encoder.weight"].T + s["encoder.bias"])


def dl_decode(s: dict[str, torch.Tensor], f: torch.Tensor) -> torch.Tensor:
    """AutoEncoder.decode: decoder(f) + bias."""
    return f @ s["decoder.weight"].T + s["bias"]


def test_dl_autoencoder_activations_match_load_dictionary(tmp_path: Path) -> None:
    """Decoder column norms 0.27-0.38 (as a StandardTrainerAprilUpdate run leaves them):
    feature activations are those of the library's loader, not of the raw weights."""
    w_dec = rand(D_IN, D_SAE, seed=1)
    norms = torch.linspace(0.27, 0.38, D_SAE)
    state = {
        "bias": rand(D_IN, seed=2, scale=0.5),
        "encoder.weight": rand(D_SAE, D_IN, seed=3),
        "encoder.bias": rand(D_SAE, seed=4, scale=0.1),
        "decoder.weight": w_dec / w_dec.norm(dim=0) * norms,
    }
    sae = load_sae(write_dl_autoencoder(tmp_path / "ae", state))
    theirs = dl_load_dictionary(state)
    x = inputs()
    codes = dl_encode(theirs, x)
    assert int((codes > 0).sum()) > 0
    close(sae.encode(x), codes)
    close(sae(x), dl_decode(theirs, codes))
    # Reconstructions are those of the raw weights too: only the feature scale moved.
    close(sae(x), dl_decode(state, dl_encode(state, x)))
    assert (dl_encode(state, x) - codes).abs().max() > 0.1  # the raw scales differ
    close(sae.W_dec.norm(dim=-1), torch.ones(D_SAE))
    folded = sae.cfg.metadata["dictionary_learning"]["decoder_norms_folded"]
    assert folded["min"] == pytest.approx(0.27, abs=1e-4)


def test_dl_autoencoder_with_unit_norms_is_read_as_saved(tmp_path: Path) -> None:
    w_dec = rand(D_IN, D_SAE, seed=11)
    state = {
        "bias": rand(D_IN, seed=12),
        "encoder.weight": rand(D_SAE, D_IN, seed=13),
        "encoder.bias": rand(D_SAE, seed=14),
        "decoder.weight": w_dec / w_dec.norm(dim=0),
    }
    sae = load_sae(write_dl_autoencoder(tmp_path / "ae", state))
    assert torch.equal(sae.W_enc, state["encoder.weight"].T)
    assert "decoder_norms_folded" not in sae.cfg.metadata["dictionary_learning"]


# == SAELens: what its inference loader makes of the folders we save =====================

# sae_lens/__init__.py: register_sae_class(...) names (SAE.load_from_disk looks them up).
SAELENS_INFERENCE_ARCHITECTURES = {
    "standard",
    "gated",
    "topk",
    "jumprelu",
    "transcoder",
    "skip_transcoder",
    "jumprelu_transcoder",
}


# sae_lens/saes/sae.py SAEConfig: the fields JumpReLUSAEConfig.from_dict keeps.
JUMPRELU_CONFIG_FIELDS = {
    "d_in",
    "d_sae",
    "dtype",
    "device",
    "apply_b_dec_to_input",
    "normalize_activations",
    "reshape_activations",
    "metadata",
}


def saelens_load_jumprelu(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """SAE.load_from_disk for a SAELens >= 6 folder, as far as it decides anything:
    the architecture must be registered, the config is filtered to the class's fields,
    and JumpReLUSAE.load_state_dict is strict (exact names and shapes)."""
    cfg = json.loads((folder / "cfg.json").read_text())
    assert int(cfg["metadata"]["sae_lens_version"].split(".")[0]) >= 6
    assert cfg["architecture"] in SAELENS_INFERENCE_ARCHITECTURES, cfg["architecture"]
    assert cfg["architecture"] == "jumprelu"
    kept = {k: v for k, v in cfg.items() if k in JUMPRELU_CONFIG_FIELDS}
    assert kept["normalize_activations"] == "none" and kept["reshape_activations"] == "none"
    state = load_file(folder / "sae_weights.safetensors")
    d_in, d_sae = kept["d_in"], kept["d_sae"]
    shapes = {
        "W_enc": (d_in, d_sae),
        "W_dec": (d_sae, d_in),
        "b_enc": (d_sae,),
        "b_dec": (d_in,),
        "threshold": (d_sae,),
    }
    assert {name: tuple(t.shape) for name, t in state.items()} == shapes
    return kept, state


def saelens_jumprelu_encode(
    cfg: dict[str, Any], s: dict[str, torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """sae_lens/saes/jumprelu_sae.py JumpReLUSAE.encode (process_sae_in subtracts b_dec
    when apply_b_dec_to_input): ReLU(pre) * (pre > threshold)."""
    sae_in = x - s["b_dec"] * cfg["apply_b_dec_to_input"]
    hidden_pre = sae_in @ s["W_enc"] + s["b_enc"]
    return torch.relu(hidden_pre) * (hidden_pre > s["threshold"]).to(hidden_pre.dtype)


def saelens_jumprelu_decode(s: dict[str, torch.Tensor], f: torch.Tensor) -> torch.Tensor:
    """JumpReLUSAE.decode: f @ W_dec + b_dec."""
    return f @ s["W_dec"] + s["b_dec"]


def trained_like(architecture: str, rescale: bool, seed: int) -> BatchTopKSAE:
    cfg = SAEConfig(
        architecture=architecture,
        d_in=D_IN,
        d_sae=D_SAE,
        k=K,
        matryoshka_widths=[8, D_SAE] if architecture == "matryoshka" else None,
        rescale_acts_by_decoder_norm=rescale,
        hookpoint="layers.2",
        model_name="SmolLM2-135M",
    )
    sae = build_sae(cfg)
    assert isinstance(sae, BatchTopKSAE)  # Matryoshka is one too
    sae.init_weights(seed=seed)
    with torch.no_grad():
        for i, tensor in enumerate(sae.tensors().values()):
            if tensor.dim() > 0:
                tensor.add_(rand(*tensor.shape, seed=seed + 10 + i, scale=0.3))
    sae.train()  # a threshold as training leaves it: the mean of kept minima
    for batch in range(3):
        sae.update_threshold_(sae.encode_sparse(inputs(seed=seed + batch)))
    sae.eval()
    return sae


@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("architecture", ["batchtopk", "matryoshka"])
def test_batchtopk_family_is_saved_as_saelens_saves_it(
    tmp_path: Path, architecture: str, rescale: bool
) -> None:
    """sae_lens/saes/batchtopk_sae.py: BatchTopK (and Matryoshka, its subclass) training
    SAEs are saved for inference as JumpReLU (get_inference_config_class), with
    threshold = ones_like(b_enc) * topk_threshold, decoder norms folded when rescaled."""
    sae = trained_like(architecture, rescale, seed=40)
    assert float(sae.threshold) > 0
    folder = save_sae(sae, tmp_path / architecture)
    cfg, state = saelens_load_jumprelu(folder)
    close(state["threshold"], sae.threshold.expand(D_SAE))
    x = inputs(seed=7)
    codes = saelens_jumprelu_encode(cfg, state, x)
    ours = sae.encode(x)
    assert int((ours > 0).sum()) > 0
    close(codes, ours)  # rescaled: SAELens folds the norms
    close(saelens_jumprelu_decode(state, codes), sae(x))
    # glossator reads its own file back as the architecture it saved.
    back = load_sae(folder)
    assert isinstance(back, BatchTopKSAE)
    assert (back.cfg.architecture, back.cfg.k) == (architecture, K)
    assert back.cfg.matryoshka_widths == sae.cfg.matryoshka_widths
    assert back.threshold.dim() == 0
    close(back.encode(x), ours)
    close(back(x), sae(x))
    assert "saved_as_jumprelu" not in back.cfg.metadata


def test_topk_still_round_trips_exactly(tmp_path: Path) -> None:
    cfg = SAEConfig(architecture="topk", d_in=D_IN, d_sae=D_SAE, k=K, hookpoint="layers.2")
    sae = build_sae(cfg)
    sae.init_weights(seed=5)
    folder = save_sae(sae, tmp_path / "topk")
    assert json.loads((folder / "cfg.json").read_text())["architecture"] == "topk"
    back = load_sae(folder)
    assert back.cfg.metadata.pop("hook_name") == "blocks.2.hook_resid_post"
    assert back.cfg == sae.cfg
    for name, tensor in sae.tensors().items():
        assert torch.equal(back.tensors()[name], tensor), name


# == SAELens: activation_scaler.json of expected_average_only_in checkpoints ============


def saelens_checkpoint(folder: Path, cfg: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """A SAELens training checkpoint: cfg.json + sae_weights.safetensors +
    activation_scaler.json (ActivationScaler.save: {"scaling_factor": s})."""
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(folder / "sae_weights.safetensors")
    )
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": SCALE}))
    return folder


SCALE = 2.5


def saelens_fold_scaler(t: dict[str, torch.Tensor], s: float) -> dict[str, torch.Tensor]:
    """sae_lens/saes/sae.py SAE.fold_activation_norm_scaling_factor, which the trainer
    (training/sae_trainer.py) applies before the final save: W_enc *= s, W_dec /= s,
    b_dec /= s."""
    return {**t, "W_enc": t["W_enc"] * s, "W_dec": t["W_dec"] / s, "b_dec": t["b_dec"] / s}


def saelens_topk_encode(t: dict[str, torch.Tensor], x: torch.Tensor, k: int) -> torch.Tensor:
    """sae_lens/saes/topk_sae.py TopKSAE.encode with rescale_acts_by_decoder_norm: hidden_pre
    * ||W_dec||, then TopK (top k, ReLU on the kept values)."""
    hidden_pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    hidden_pre = hidden_pre * t["W_dec"].norm(dim=-1)
    values, indices = torch.topk(hidden_pre, k=k, dim=-1)
    return torch.zeros_like(hidden_pre).scatter(-1, indices, values.relu())


def saelens_topk_decode(t: dict[str, torch.Tensor], f: torch.Tensor) -> torch.Tensor:
    """TopKSAE.decode with rescale_acts_by_decoder_norm."""
    return (f / t["W_dec"].norm(dim=-1)) @ t["W_dec"] + t["b_dec"]


def scaler_cfg(architecture: str, **fields: Any) -> dict[str, Any]:
    meta = {"hook_name": "blocks.2.hook_resid_post", "sae_lens_version": "6.5.1"}
    return {
        "architecture": architecture,
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "apply_b_dec_to_input": True,
        "normalize_activations": "expected_average_only_in",
        "reshape_activations": "none",
        "metadata": meta,
        **fields,
    }


def raw_tensors(seed: int) -> dict[str, torch.Tensor]:
    return {
        "W_enc": rand(D_IN, D_SAE, seed=seed),
        "b_enc": rand(D_SAE, seed=seed + 1, scale=0.1),
        "W_dec": rand(D_SAE, D_IN, seed=seed + 2, scale=0.3),
        "b_dec": rand(D_IN, seed=seed + 3, scale=0.5),
    }


def test_scaler_of_a_rescaled_topk_checkpoint_is_folded_as_saelens_does(tmp_path: Path) -> None:
    t = raw_tensors(60)
    cfg = scaler_cfg("topk", k=K, rescale_acts_by_decoder_norm=True)
    sae = load_sae(saelens_checkpoint(tmp_path / "ckpt", cfg, t))
    folded = saelens_fold_scaler(t, SCALE)
    x = inputs()
    codes = saelens_topk_encode(folded, x, K)
    close(sae.encode(x), codes)
    close(sae(x), saelens_topk_decode(folded, codes))
    # The same reconstruction as the checkpoint run on scaled input, unscaled (evals.py).
    unfolded = saelens_topk_decode(t, saelens_topk_encode(t, x * SCALE, K)) / SCALE
    close(sae(x), unfolded)


def test_scaler_of_a_rescaled_batchtopk_checkpoint_keeps_its_features(tmp_path: Path) -> None:
    t = {**raw_tensors(70), "topk_threshold": torch.tensor(0.8, dtype=torch.float64)}
    cfg = scaler_cfg("batchtopk", k=K, rescale_acts_by_decoder_norm=True)
    sae = load_sae(saelens_checkpoint(tmp_path / "ckpt", cfg, t))
    x = inputs()
    # BatchTopK's inference rule on the checkpoint, on scaled input (batchtopk_sae.py).
    pre = ((x * SCALE - t["b_dec"]) @ t["W_enc"] + t["b_enc"]) * t["W_dec"].norm(dim=-1)
    codes = pre.relu() * (pre > 0.8)
    assert int((codes > 0).sum()) > 0
    close(sae.encode(x) * SCALE, codes)  # the same features, activations divided by s
    recon = (codes / t["W_dec"].norm(dim=-1)) @ t["W_dec"] + t["b_dec"]
    close(sae(x), recon / SCALE)


# == SAELens abstopk, sparsify groupmax =================================================


@pytest.mark.parametrize("rescale", [False, True])
def test_saelens_abstopk_matches_and_round_trips(tmp_path: Path, rescale: bool) -> None:
    """sae_lens/saes/abstopk_sae.py: AbsTopKSAE is TopKSAE (rescale by ||W_dec|| included)
    with AbsTopK: topk(|hidden_pre|) indices, signed values scattered, no ReLU."""
    t = raw_tensors(80)
    cfg = {**scaler_cfg("abstopk", k=K, rescale_acts_by_decoder_norm=rescale)}
    cfg["normalize_activations"] = "none"
    folder = tmp_path / "abstopk"
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(t, str(folder / "sae_weights.safetensors"))
    sae = load_sae(folder)
    assert (sae.cfg.architecture, sae.cfg.k) == ("abstopk", K)
    x = inputs()
    hidden_pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    if rescale:
        hidden_pre = hidden_pre * t["W_dec"].norm(dim=-1)
    indices = torch.topk(hidden_pre.abs(), k=K, dim=-1).indices
    codes = torch.zeros_like(hidden_pre).scatter(-1, indices, hidden_pre.gather(-1, indices))
    assert bool((codes < 0).any())  # it does fire negatively
    close(sae.encode(x), codes)
    decoded = (codes / t["W_dec"].norm(dim=-1) if rescale else codes) @ t["W_dec"] + t["b_dec"]
    close(sae(x), decoded)
    saved = save_sae(sae, tmp_path / "saved")
    written = json.loads((saved / "cfg.json").read_text())
    assert (written["architecture"], written["k"]) == ("abstopk", K)
    assert written["rescale_acts_by_decoder_norm"] is rescale
    back = load_sae(saved)
    assert back.cfg == sae.cfg
    close(back(x), sae(x))


def test_sparsify_groupmax_matches_its_encoder(tmp_path: Path) -> None:
    """sparsify/fused_encoder.py FusedEncoder (activation "groupmax"): relu(linear(x -
    b_dec)), max over k contiguous groups, indices offset by the group start; decode
    (sparse_coder.py): sum of acts * W_dec rows + b_dec."""
    g = torch.Generator().manual_seed(90)
    t = {
        "encoder.weight": torch.randn(D_SAE, D_IN, generator=g),
        "encoder.bias": torch.randn(D_SAE, generator=g) * 0.1,
        "W_dec": torch.randn(D_SAE, D_IN, generator=g),
        "b_dec": torch.randn(D_IN, generator=g),
    }
    folder = tmp_path / "layers.3"
    folder.mkdir()
    cfg = sparsify_cfg(D_IN, D_SAE, K, activation="groupmax")
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(t, str(folder / "sae.safetensors"))
    sae = load_sae(folder)
    assert (sae.cfg.architecture, sae.cfg.k, sae.cfg.hookpoint) == ("groupmax", K, "layers.3")
    x = inputs()
    preacts = torch.relu((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"])
    values, within = preacts.unflatten(-1, (K, -1)).max(dim=-1)
    indices = within + torch.arange(0, D_SAE, D_SAE // K)
    codes = torch.zeros_like(preacts).scatter(-1, indices, values)
    close(sae.encode(x), codes)
    sparse = sae.encode_sparse(x)
    assert torch.equal(sparse.indices, indices)
    close(sae.decode(sparse), codes @ t["W_dec"] + t["b_dec"])


# == SAELens run-time normalisation: layer_norm, constant_norm_rescale ==================


def saelens_norm_in(how: str, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """sae_lens/saes/sae.py SAE._setup_activation_normalization: the input transform and
    its inverse for the output (run_time_activation_norm_fn_in / _out)."""
    if how == "constant_norm_rescale":
        coeff = (D_IN**0.5) / x.norm(dim=-1, keepdim=True)
        return x * coeff, lambda out: out / coeff
    mu = x.mean(dim=-1, keepdim=True)
    centred = x - mu
    std = centred.std(dim=-1, keepdim=True)
    return centred / (std + 1e-5), lambda out: out * std + mu


@pytest.mark.parametrize("how", ["layer_norm", "constant_norm_rescale"])
def test_saelens_run_time_normalisation(tmp_path: Path, how: str) -> None:
    """StandardSAE.encode: process_sae_in (norm, then - b_dec) @ W_enc + b_enc, ReLU;
    decode: f @ W_dec + b_dec, then the output norm function."""
    t = raw_tensors(100)
    cfg = {**scaler_cfg("standard"), "normalize_activations": how}
    folder = tmp_path / how
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(t, str(folder / "sae_weights.safetensors"))
    sae = load_sae(folder)
    assert sae.cfg.normalize_activations == how
    x = inputs() + 3.0  # an offset for layer_norm's mean to matter
    sae_in, norm_out = saelens_norm_in(how, x)
    codes = torch.relu((sae_in - t["b_dec"]) @ t["W_enc"] + t["b_enc"])
    close(sae.encode(x), codes)
    expected = norm_out(codes @ t["W_dec"] + t["b_dec"])
    close(sae(x), expected)
    sparse, recon = sae.reconstruct(x)
    close(recon, expected)
    with pytest.raises(SAEError, match=r"normalises each input at run time .* reconstruct\(x\)"):
        sae.decode(sparse)  # the inverse needs x: never a silently unnormalised output
    saved = save_sae(sae, tmp_path / "saved")
    assert json.loads((saved / "cfg.json").read_text())["normalize_activations"] == how
    close(load_sae(saved)(x), expected)
