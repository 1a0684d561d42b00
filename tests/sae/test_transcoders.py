"""Transcoders and skip-transcoders from SAELens and sparsify files, against the peers'
own formulas (written out here from their source), to 1e-5 in float32.

SAELens: sae_lens/saes/transcoder.py (Transcoder, SkipTranscoder, JumpReLUTranscoder,
JumpReLUSkipTranscoder); config d_out, metadata hook_name / hook_name_out as its
GemmaScope transcoder loader writes them (loading/pretrained_sae_loaders.py:
"blocks.N.ln2.hook_normalized" -> "blocks.N.hook_mlp_out"). sparsify:
sparsify/sparse_coder.py (transcode, skip_connection).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from sae import SAEError, load_sae, save_sae
from sae.formats.inspect import inspect_path

D_IN, D_OUT, D_SAE, K = 8, 6, 32, 4


def rand(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


X = rand(16, D_IN, seed=99, scale=2.0)


def saelens_transcoder(folder: Path, architecture: str, seed: int) -> dict[str, torch.Tensor]:
    t = {
        "W_enc": rand(D_IN, D_SAE, seed=seed),
        "b_enc": rand(D_SAE, seed=seed + 1, scale=0.1),
        "W_dec": rand(D_SAE, D_OUT, seed=seed + 2),
        "b_dec": rand(D_OUT, seed=seed + 3),
    }
    if "jumprelu" in architecture:
        t["threshold"] = rand(D_SAE, seed=seed + 4).abs()
    if "skip" in architecture:
        t["W_skip"] = rand(D_OUT, D_IN, seed=seed + 5, scale=0.3)
    meta = {
        "model_name": "gemma-2-2b",
        "hook_name": "blocks.3.ln2.hook_normalized",
        "hook_name_out": "blocks.3.hook_mlp_out",
        "sae_lens_version": "6.12.0",
    }
    cfg = {
        "architecture": architecture,
        "d_in": D_IN,
        "d_out": D_OUT,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": meta,
    }
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(t, str(folder / "sae_weights.safetensors"))
    return t


def saelens_encode(architecture: str, t: dict[str, torch.Tensor], x: torch.Tensor) -> Any:
    """Transcoder.encode (process_sae_in subtracts no b_dec) / JumpReLUTranscoder.encode."""
    hidden_pre = x @ t["W_enc"] + t["b_enc"]
    acts = torch.relu(hidden_pre)
    if "jumprelu" in architecture:
        acts = acts * (hidden_pre > t["threshold"]).to(acts.dtype)
    return acts


def saelens_forward(architecture: str, t: dict[str, torch.Tensor], x: torch.Tensor) -> Any:
    """Transcoder.forward: decode (f @ W_dec + b_dec); SkipTranscoder adds x @ W_skip.T."""
    out = saelens_encode(architecture, t, x) @ t["W_dec"] + t["b_dec"]
    return out + x @ t["W_skip"].T if "skip" in architecture else out


ARCHS = ["transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder"]


@pytest.mark.parametrize("architecture", ARCHS)
def test_saelens_transcoders(tmp_path: Path, architecture: str) -> None:
    t = saelens_transcoder(tmp_path / "tc", architecture, seed=10)
    sae = load_sae(tmp_path / "tc")
    assert (sae.cfg.architecture, sae.d_in, sae.d_out) == (architecture, D_IN, D_OUT)
    # Features belong to the input side: evidence reads the MLP's input.
    assert (sae.cfg.hookpoint, sae.cfg.output_hookpoint) == ("layers.3.mlp_in", "layers.3.mlp")
    codes = saelens_encode(architecture, t, X)
    assert int((codes > 0).sum()) > 0
    close(sae.encode(X), codes)
    expected = saelens_forward(architecture, t, X)
    close(sae(X), expected)
    close(sae.reconstruct(X)[1], expected)
    if "skip" in architecture:
        with pytest.raises(SAEError, match="skip connection"):
            sae.decode(codes)
    else:
        close(sae.decode(sae.encode_sparse(X)), expected)
    saved = save_sae(sae, tmp_path / "saved")
    written = json.loads((saved / "cfg.json").read_text())
    assert (written["architecture"], written["d_out"]) == (architecture, D_OUT)
    assert written["metadata"]["hook_name_out"] == "blocks.3.hook_mlp_out"
    assert written["metadata"]["hook_name"] == "blocks.3.ln2.hook_normalized"
    back = load_sae(saved)
    assert back.cfg == sae.cfg
    close(back(X), expected)


def test_an_unknown_output_hook_is_refused(tmp_path: Path) -> None:
    saelens_transcoder(tmp_path / "tc", "transcoder", seed=20)
    cfg = json.loads((tmp_path / "tc" / "cfg.json").read_text())
    cfg["metadata"]["hook_name_out"] = "blocks.3.mlp.hook_post"
    (tmp_path / "tc" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEError, match=r"hook_name_out='blocks\.3\.mlp\.hook_post'"):
        load_sae(tmp_path / "tc")


def sparsify_transcoder(folder: Path, skip: bool, seed: int) -> dict[str, torch.Tensor]:
    """SparseCoder.save_to_disk of a transcoder (d_out = d_in in sparsify)."""
    t = {
        "encoder.weight": rand(D_SAE, D_IN, seed=seed),
        "encoder.bias": rand(D_SAE, seed=seed + 1, scale=0.1),
        "W_dec": rand(D_SAE, D_IN, seed=seed + 2),
        "b_dec": rand(D_IN, seed=seed + 3),
    }
    if skip:
        t["W_skip"] = rand(D_IN, D_IN, seed=seed + 4, scale=0.3)
    cfg = {
        "activation": "topk",
        "expansion_factor": 4,
        "normalize_decoder": True,
        "num_latents": 0,
        "k": K,
        "multi_topk": False,
        "skip_connection": skip,
        "transcode": True,
        "d_in": D_IN,
    }
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(t, str(folder / "sae.safetensors"))
    return t


@pytest.mark.parametrize("skip", [False, True])
def test_sparsify_transcoders(tmp_path: Path, skip: bool) -> None:
    """SparseCoder.encode: no b_dec subtraction when transcode; fused_encoder: top k of
    relu(linear); forward: decode (acts @ W_dec + b_dec) + x @ W_skip.mT."""
    t = sparsify_transcoder(tmp_path / "layers.3.mlp", skip, seed=30)
    sae = load_sae(tmp_path / "layers.3.mlp")
    expected_arch = "topk_skip_transcoder" if skip else "topk_transcoder"
    assert (sae.cfg.architecture, sae.cfg.apply_b_dec_to_input) == (expected_arch, False)
    assert (sae.cfg.hookpoint, sae.cfg.output_hookpoint) == ("layers.3.mlp_in", "layers.3.mlp")
    preacts = torch.relu(X @ t["encoder.weight"].T + t["encoder.bias"])
    values, indices = torch.topk(preacts, K, dim=-1)
    codes = torch.zeros_like(preacts).scatter(-1, indices, values)
    close(sae.encode(X), codes)
    out = codes @ t["W_dec"] + t["b_dec"]
    close(sae(X), out + X @ t["W_skip"].mT if skip else out)


def test_inspect_shows_both_sides(tmp_path: Path) -> None:
    saelens_transcoder(tmp_path / "tc", "jumprelu_skip_transcoder", seed=40)
    report = inspect_path(tmp_path / "tc")
    assert report["usable"] is True
    assert (report["hookpoint"], report["hook_name"]) == (
        "layers.3.mlp_in",
        "blocks.3.ln2.hook_normalized",
    )
    assert (report["output_hookpoint"], report["output_hook_name"], report["d_out"]) == (
        "layers.3.mlp",
        "blocks.3.hook_mlp_out",
        D_OUT,
    )
