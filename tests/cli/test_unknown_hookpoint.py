"""`glossator activations` with an SAE whose hook name glossator cannot map fails with
a message naming it (no traceback), instead of reading the default hookpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli
from tests.probes.test_hookpoint_names import write_saelens


def env_for(model_dir: Path, sae_dir: Path, data_dir: Path) -> dict[str, str]:
    return {
        "GLOSSATOR_MODEL": str(model_dir),
        "GLOSSATOR_SAE": str(sae_dir),
        "GLOSSATOR_DATA_DIR": str(data_dir),
        "GLOSSATOR_DEVICE": "cpu",
    }


@pytest.mark.parametrize(
    "hook_name",
    ["blocks.1.hook_mlp_in", "blocks.1.ln1.hook_normalized", "model.layers.1.input_layernorm"],
)
def test_an_unknown_hook_name_fails_naming_it(
    tiny_llama_dir: Path, tmp_path: Path, hook_name: str
) -> None:
    sae = write_saelens(tmp_path / "sae", hook_name, d_in=32)
    env = env_for(tiny_llama_dir, sae, tmp_path / "data")
    result = run_cli("activations", "hello world", "--features", "0,1", "--json", env=env)
    assert result.returncode != 0, result.stdout
    assert f"unknown hook name {hook_name!r}" in result.stderr
    assert "blocks.N.hook_resid_post" in result.stderr  # lists the names it knows
    assert "Traceback" not in result.stderr and not result.stdout.strip()


def test_a_hugging_face_block_path_reads_that_block(tiny_llama_dir: Path, tmp_path: Path) -> None:
    sae = write_saelens(tmp_path / "sae", "model.layers.1", d_in=32)
    env = env_for(tiny_llama_dir, sae, tmp_path / "data")
    result = run_cli("activations", "hello world", "--features", "0,1", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["hookpoint"] == "layers.1"


def test_an_sae_recording_no_hookpoint_is_not_run_at_the_default(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    sae = write_saelens(tmp_path / "sae", None, d_in=32)
    env = env_for(tiny_llama_dir, sae, tmp_path / "data")
    args = ("activations", "hello world", "--features", "0,1", "--json")
    refused = run_cli(*args, env=env)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "does not record the hookpoint" in refused.stderr
    assert "GLOSSATOR_HOOKPOINT" in refused.stderr
    chosen = run_cli(*args, env={**env, "GLOSSATOR_HOOKPOINT": "layers.2.mlp_in"})
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["hookpoint"] == "layers.2.mlp_in"
