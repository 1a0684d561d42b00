"""CE-loss recovered (probes/splice.py, `glossator sae eval`) goes through each dictionary's
own `reconstruct`: run-time input normalisation, a folded activation scaler and skip terms
are evaluated, not refused, and a transcoder's prediction is written at its output
hookpoint. Tiny real Llama (tests/conftest.py)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from probes.hookpoints import decoder_layers, run_to_hookpoints
from probes.model import SubjectModel
from probes.splice import sae_spliced, splice_losses
from sae import SAEConfig, SAEError, SparseAutoencoder, build_sae, load_sae, save_sae
from sae.metrics import ReconstructionStats
from tests.sae_helpers import identity_sae

D = 32  # the tiny Llama's width
TEXTS = ["The quick brown fox jumps over the lazy dog.", "red green blue", "A fortune a day."]
IN, OUT = "layers.1.mlp_in", "layers.1.mlp"


def normalising_identity(how: str) -> SparseAutoencoder:
    """Reconstructs its normalised input exactly, so reconstruct(x) is x up to rounding
    (and layer_norm's 1e-5 in the denominator, which SAELens does not undo)."""
    sae = identity_sae(D)
    sae.cfg.normalize_activations = how  # type: ignore[assignment]
    return sae


def _recovered(subject: SubjectModel, sae: SparseAutoencoder, hookpoint: str, **kw: Any) -> Any:
    stats = ReconstructionStats(sae.d_out, sae.d_sae)
    losses = splice_losses(subject, sae, hookpoint, TEXTS, context_length=16, stats=stats, **kw)
    assert losses.ce_zero != pytest.approx(losses.ce_clean, abs=1e-3)  # a gap to recover
    return losses, stats.result()


@pytest.mark.parametrize("how", ["layer_norm", "constant_norm_rescale"])
def test_run_time_normalisation_is_undone_when_spliced(tiny_llama: SubjectModel, how: str) -> None:
    losses, metrics = _recovered(tiny_llama, normalising_identity(how), "layers.1")
    assert losses.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert metrics.explained_variance == pytest.approx(1.0, abs=1e-6)


def test_a_folded_activation_scaler_is_spliced_exactly(
    tiny_llama: SubjectModel, tmp_path: Path
) -> None:
    """An SAELens checkpoint with activation_scaler.json (expected_average_only_in)."""
    eye = torch.eye(D)
    tensors = {
        "W_enc": torch.cat([eye, -eye], dim=1),
        "b_enc": torch.zeros(2 * D),
        "W_dec": torch.cat([eye, -eye], dim=0),
        "b_dec": torch.zeros(D),
    }
    cfg = {
        "architecture": "standard",
        "d_in": D,
        "d_sae": 2 * D,
        "dtype": "float32",
        "apply_b_dec_to_input": False,
        "normalize_activations": "expected_average_only_in",
        "metadata": {"hook_name": "blocks.1.hook_resid_post"},
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 0.37}))
    sae = load_sae(tmp_path)
    assert sae.cfg.hookpoint == "layers.1"
    losses, _ = _recovered(tiny_llama, sae, "layers.1")
    assert losses.ce_loss_recovered == pytest.approx(1.0, abs=1e-5)


def linear_mlp_model(subject: SubjectModel) -> tuple[SubjectModel, torch.Tensor]:
    """A copy of the model whose block-1 MLP is one linear map W, so that a transcoder
    can predict it exactly; returns (the copy, W [out, in])."""
    model = copy.deepcopy(subject.model)
    linear = nn.Linear(D, D, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(D, D, generator=torch.Generator().manual_seed(3)) / 4)
    decoder_layers(model)[1].mlp = linear
    return dataclasses.replace(subject, model=model), linear.weight.detach().clone()


def exact_transcoder(w: torch.Tensor, skip: bool) -> SparseAutoencoder:
    """x -> x @ W.T: through the features (f = [relu(x), relu(-x)], W_dec = [W.T; -W.T]) or,
    for the skip-transcoder, through W_skip alone, its input layer_norm'ed for the codes
    (the skip term reads the raw input, as SAELens' does)."""
    cfg = SAEConfig(
        architecture="skip_transcoder" if skip else "transcoder",
        d_in=D,
        d_sae=2 * D,
        apply_b_dec_to_input=False,
        normalize_activations="layer_norm" if skip else "none",
        hookpoint=IN,
        output_hookpoint=OUT,
    )
    sae = build_sae(cfg)
    eye = torch.eye(D)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        if skip:
            sae.W_skip.copy_(w)  # type: ignore[operator]
        else:
            sae.W_dec.copy_(torch.cat([w.T, -w.T], dim=0))
    return sae


@pytest.mark.parametrize("skip", [False, True])
def test_an_exact_transcoder_recovers_all_of_the_loss(tiny_llama: SubjectModel, skip: bool) -> None:
    subject, w = linear_mlp_model(tiny_llama)
    sae = exact_transcoder(w, skip)
    losses, metrics = _recovered(subject, sae, IN, output_hookpoint=OUT)
    assert losses.ce_loss_recovered == pytest.approx(1.0, abs=1e-5)
    assert metrics.explained_variance == pytest.approx(1.0, abs=1e-5)  # against the MLP's out


def random_transcoder(skip: bool = True) -> SparseAutoencoder:
    cfg = SAEConfig(
        architecture="skip_transcoder" if skip else "transcoder",
        d_in=D,
        d_sae=64,
        apply_b_dec_to_input=False,
        hookpoint=IN,
        output_hookpoint=OUT,
    )
    sae = build_sae(cfg)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in sae.parameters():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) / 4)
    return sae


def test_a_transcoder_writes_its_output_hookpoint_not_its_input(
    tiny_llama: SubjectModel,
) -> None:
    model, sae = tiny_llama.model, random_transcoder()
    enc = tiny_llama.tokenizer(TEXTS, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    valid = mask.bool()
    names = [IN, OUT, "layers.1"]
    clean = run_to_hookpoints(model, ids, mask, names)
    with sae_spliced(model, sae, IN, OUT, valid):
        spliced = run_to_hookpoints(model, ids, mask, names)
    assert torch.equal(spliced[IN], clean[IN])  # the input side is only read
    with torch.no_grad():
        predicted = sae.reconstruct(clean[IN][valid])[1]
    torch.testing.assert_close(spliced[OUT][valid], predicted, rtol=0, atol=1e-6)
    assert torch.equal(spliced[OUT][~valid], clean[OUT][~valid])  # padding untouched
    assert not torch.allclose(spliced[OUT][valid], clean[OUT][valid], atol=1e-3)
    assert not torch.allclose(spliced["layers.1"], clean["layers.1"], atol=1e-3)


def test_a_transcoder_needs_an_output_after_its_input(tiny_llama: SubjectModel) -> None:
    sae = random_transcoder()
    with pytest.raises(SAEError, match="no output hookpoint"):
        splice_losses(tiny_llama, sae, IN, TEXTS)
    with pytest.raises(SAEError, match="must come after its input"):
        splice_losses(tiny_llama, sae, IN, TEXTS, output_hookpoint="layers.1.attn")


def test_cli_sae_eval_scores_a_skip_transcoder_at_its_output(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cli.app import app

    save_sae(random_transcoder(), tmp_path / "tc")
    corpus = tmp_path / "heldout.txt"
    corpus.write_text(TEXTS[0])
    env = {
        "GLOSSATOR_MODEL": str(tiny_llama_dir),
        "GLOSSATOR_SAE": str(tmp_path / "tc"),
        "GLOSSATOR_DATA_DIR": str(tmp_path / "data"),
        "GLOSSATOR_DEVICE": "cpu",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = ["sae", "eval", "--corpus", str(corpus), "--tokens", "8", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["hookpoint"], doc["output_hookpoint"]) == (IN, OUT)
    assert doc["n_tokens"] == 8 and doc["ce_spliced"] != doc["ce_clean"]
