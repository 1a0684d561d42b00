"""`glossator sae inspect PATH`: what a folder or file holds and whether glossator can use
it, on files written in each peer's format (fixtures from test_formats / test_detect)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from cli.sae import sae_app
from tests.sae.test_detect import sparsify_run, sparsify_sae
from tests.sae.test_formats import (
    D_IN,
    D_SAE,
    K,
    base_tensors,
    linear_state,
    modern_cfg,
    rand,
    write_dl,
    write_saelens,
)


def inspect(path: Path, *extra: str) -> Any:
    result = CliRunner().invoke(sae_app, ["inspect", str(path), *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output) if "--json" in extra else result.output


def test_run_time_normalisation_is_shown(tmp_path: Path) -> None:
    cfg = modern_cfg("topk", k=K, normalize_activations="layer_norm")
    report = inspect(write_saelens(tmp_path / "ln", cfg, base_tensors()), "--json")
    assert (report["normalization"], report["usable"]) == ("layer_norm", True)


def test_saelens_jumprelu_in_both_namings(tmp_path: Path) -> None:
    tensors = {**base_tensors(seed=1), "threshold": rand(D_SAE, seed=2).abs()}
    cfg = modern_cfg("jumprelu")
    cfg["metadata"]["hook_name"] = "blocks.3.hook_mlp_out"
    report = inspect(write_saelens(tmp_path / "sae", cfg, tensors), "--json")
    assert report["format"] == "saelens" and report["architecture"] == "jumprelu"
    assert (report["hookpoint"], report["hook_name"]) == ("layers.3.mlp", "blocks.3.hook_mlp_out")
    assert (report["d_in"], report["width"], report["normalization"]) == (D_IN, D_SAE, "none")
    threshold = tensors["threshold"]
    assert report["threshold"]["min"] == float(threshold.min())
    assert report["usable"] is True and report["reason"] is None
    text = inspect(tmp_path / "sae")
    assert (
        "hookpoint: layers.3.mlp" in text and "TransformerLens hook: blocks.3.hook_mlp_out" in text
    )
    assert "usable by glossator: yes" in text


def test_a_refused_sae_is_described_and_says_why(tmp_path: Path) -> None:
    cfg = modern_cfg("topk", k=K, reshape_activations="hook_z")
    report = inspect(write_saelens(tmp_path / "z", cfg, base_tensors()), "--json")
    assert (report["architecture"], report["k"], report["width"]) == ("topk", K, D_SAE)
    assert report["usable"] is False
    assert "reshape_activations='hook_z'" in report["reason"]
    unknown = modern_cfg()
    unknown["metadata"]["hook_name"] = "blocks.3.ln1.hook_normalized"
    report = inspect(write_saelens(tmp_path / "hook", unknown, base_tensors()), "--json")
    assert report["usable"] is False and "unknown hook name" in report["reason"]
    assert report["recorded_hook_name"] == "blocks.3.ln1.hook_normalized"
    text = inspect(tmp_path / "hook")
    assert "usable by glossator: no" in text and "why not: " in text


def test_a_sparsify_run_lists_each_hookpoint(tmp_path: Path) -> None:
    run = sparsify_run(tmp_path)
    report = inspect(run, "--json")
    saes = {entry["hookpoint"]: entry for entry in report["saes"]}
    assert sorted(saes) == ["layers.2", "layers.4", "layers.4.mlp"]
    mlp = saes["layers.4.mlp"]
    assert (mlp["format"], mlp["hook_name"], mlp["k"], mlp["width"]) == (
        "sparsify",
        "blocks.4.hook_mlp_out",
        2,
        16,
    )
    assert all(entry["usable"] for entry in saes.values())
    assert "holds 3 SAEs, one per hookpoint" in inspect(run)
    signed = sparsify_sae(tmp_path / "signed" / "layers.1", seed=5)
    cfg = json.loads((signed / "cfg.json").read_text())
    (signed / "cfg.json").write_text(json.dumps({**cfg, "signed": True}))
    report = inspect(signed, "--json")
    assert report["architecture"] == "topk+signed" and report["usable"] is False


def test_dictionary_learning_and_a_path_that_is_no_sae(tmp_path: Path) -> None:
    state = {**linear_state(500), "bias": rand(D_IN, seed=504)}
    report = inspect(write_dl(tmp_path / "ae", "AutoEncoder", state), "--json")
    assert (report["format"], report["architecture"]) == ("dictionary_learning", "AutoEncoder")
    assert (report["recorded_hook_name"], report["hookpoint"]) == ("resid_post_layer_3", "layers.3")
    assert report["folded_on_load"]["decoder_norms_folded"]["max"] > 1
    (tmp_path / "empty").mkdir()
    report = inspect(tmp_path / "empty", "--json")
    assert report["usable"] is False and "no SAE found" in report["reason"]
    result = CliRunner().invoke(sae_app, ["inspect", str(tmp_path / "absent")])
    assert result.exit_code == 2 and "does not exist" in result.output
