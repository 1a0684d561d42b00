"""Format detection by content, and picking one hookpoint's SAE from a folder of several.

Fixtures follow the peers' own layouts: a sparsify run as `Trainer._checkpoint` writes it
(sparsify/trainer.py: one `SparseCoder.save_to_disk` folder per hookpoint, then
lr_scheduler_0.pt, optimizer_0.pt, state.pt {"global_step"} and the run's config.json
{"sae": SparseCoderConfig, "hookpoints": [...]}, plus rank_0_state.pt), and a
dictionary_learning trainer folder (ae.pt + config.json with "trainer").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sae.base import SAEError
from sae.formats import sparsify
from sae.formats.detect import detect_format
from tests.sae_helpers import sparsify_cfg

D_IN, D_SAE, K = 8, 16, 2


def sparsify_sae(folder: Path, seed: int) -> Path:
    """SparseCoder.save_to_disk: cfg.json (SparseCoderConfig + d_in) + sae.safetensors."""
    folder.mkdir(parents=True)
    cfg = sparsify_cfg(D_IN, D_SAE, K)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    g = torch.Generator().manual_seed(seed)
    tensors = {
        "encoder.weight": torch.randn(D_SAE, D_IN, generator=g),
        "encoder.bias": torch.randn(D_SAE, generator=g),
        "W_dec": torch.randn(D_SAE, D_IN, generator=g),
        "b_dec": torch.randn(D_IN, generator=g),
    }
    save_file(tensors, str(folder / "sae.safetensors"))
    return folder


def sparsify_run(root: Path) -> Path:
    run = root / "unnamed"
    for i, hookpoint in enumerate(("layers.2", "layers.4", "layers.4.mlp")):
        sparsify_sae(run / hookpoint, seed=i)
    torch.save({"global_step": 1000}, run / "state.pt")
    torch.save({"num_tokens_since_fired": {}, "best_loss": {}}, run / "rank_0_state.pt")
    torch.save({"state": {}, "param_groups": []}, run / "optimizer_0.pt")
    torch.save({"last_epoch": 1000}, run / "lr_scheduler_0.pt")
    config = {
        "sae": {"k": K, "expansion_factor": 2},
        "hookpoints": ["layers.2", "layers.4"],
        "model": "EleutherAI/pythia-70m",
        "save_dir": "checkpoints",
    }
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_hookpoint_picks_the_sae_of_a_sparsify_run(tmp_path: Path) -> None:
    run = sparsify_run(tmp_path)
    assert detect_format(run, hookpoint="layers.4") == ("sparsify", run / "layers.4")
    assert detect_format(run, hookpoint="layers.4.mlp") == ("sparsify", run / "layers.4.mlp")
    sae = sparsify.load(detect_format(run, "layers.2")[1])
    assert (sae.cfg.hookpoint, sae.cfg.model_name) == ("layers.2", "EleutherAI/pythia-70m")
    # A folder holding one SAE ignores the hookpoint (the SAE says where it reads).
    assert detect_format(run / "layers.2", hookpoint="layers.9") == ("sparsify", run / "layers.2")


def test_a_sparsify_run_without_hookpoint_says_what_to_set(tmp_path: Path) -> None:
    run = sparsify_run(tmp_path)
    with pytest.raises(SAEError) as caught:
        detect_format(run)
    message = str(caught.value)
    assert "one SAE per hookpoint (layers.2, layers.4, layers.4.mlp)" in message
    assert "GLOSSATOR_HOOKPOINT=layers.2" in message
    assert f"GLOSSATOR_SAE={run / 'layers.2'}" in message
    assert "load_sae(" not in message  # a CLI user gets settings, not Python
    with pytest.raises(SAEError, match=r"none for hookpoint layers\.6; set GLOSSATOR_HOOKPOINT"):
        detect_format(run, hookpoint="layers.6")


@pytest.mark.parametrize("name", ["state.pt", "rank_0_state.pt", "optimizer_0.pt"])
def test_sparsify_training_state_is_not_read_as_dictionary_learning(
    tmp_path: Path, name: str
) -> None:
    run = sparsify_run(tmp_path)
    with pytest.raises(SAEError) as caught:
        detect_format(run / name)
    message = str(caught.value)
    assert "sparsify training-state file" in message
    assert "dictionary_learning" not in message
    assert f"GLOSSATOR_SAE={run} and GLOSSATOR_HOOKPOINT=layers.2" in message


def test_dictionary_learning_is_detected_by_its_config(tmp_path: Path) -> None:
    folder = tmp_path / "trainer_0"
    (folder / "checkpoints").mkdir(parents=True)
    config = {"trainer": {"dict_class": "AutoEncoder", "activation_dim": D_IN}}
    (folder / "config.json").write_text(json.dumps(config))
    torch.save({"bias": torch.zeros(D_IN)}, folder / "checkpoints" / "ae_100.pt")
    with pytest.raises(SAEError, match=r"no ae\.pt; pass one of its checkpoints, e\.g\. "):
        detect_format(folder)
    torch.save({"bias": torch.zeros(D_IN)}, folder / "ae.pt")
    assert detect_format(folder) == ("dictionary_learning", folder / "ae.pt")
    assert detect_format(folder / "config.json") == ("dictionary_learning", folder / "ae.pt")
    step = folder / "checkpoints" / "ae_100.pt"
    assert detect_format(step) == ("dictionary_learning", step)


def test_a_pt_file_under_another_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    torch.save({"w": torch.zeros(2)}, tmp_path / "weights.pt")
    with pytest.raises(SAEError, match=r"has no 'trainer' object, so weights\.pt is not a dict"):
        detect_format(tmp_path / "weights.pt")


def test_a_config_without_weights_names_the_missing_file(tmp_path: Path) -> None:
    sparsify_dir = sparsify_sae(tmp_path / "layers.1", seed=0)
    (sparsify_dir / "sae.safetensors").unlink()
    with pytest.raises(SAEError, match=r"not sae\.safetensors \(a sparsify config\)"):
        detect_format(sparsify_dir)
    saelens_dir = tmp_path / "saelens"
    saelens_dir.mkdir()
    (saelens_dir / "cfg.json").write_text(json.dumps({"architecture": "topk", "d_sae": 4}))
    with pytest.raises(SAEError, match=r"not sae_weights\.safetensors \(an SAELens config\)"):
        detect_format(saelens_dir)
