"""A sparsify run folder as GLOSSATOR_SAE: GLOSSATOR_HOOKPOINT picks its SAE; without it,
or with a training-state file, the message says which settings to use (no Python)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.cli_helpers import run_cli


def sparsify_run(root: Path, d_in: int = 32) -> Path:
    run = root / "run"
    for i, name in enumerate(("layers.1", "layers.2")):
        folder = run / name
        folder.mkdir(parents=True)
        (folder / "cfg.json").write_text(
            json.dumps({"activation": "topk", "k": 2, "num_latents": 16, "d_in": d_in})
        )
        g = torch.Generator().manual_seed(i)
        save_file(
            {
                "encoder.weight": torch.randn(16, d_in, generator=g),
                "encoder.bias": torch.zeros(16),
                "W_dec": torch.randn(16, d_in, generator=g),
                "b_dec": torch.zeros(d_in),
            },
            str(folder / "sae.safetensors"),
        )
    torch.save({"global_step": 10}, run / "state.pt")
    (run / "config.json").write_text(json.dumps({"sae": {"k": 2}, "hookpoints": ["layers.1"]}))
    return run


def test_sparsify_run_folder_with_hookpoint_setting(tiny_llama_dir: Path, tmp_path: Path) -> None:
    run = sparsify_run(tmp_path)
    env = {
        "GLOSSATOR_MODEL": str(tiny_llama_dir),
        "GLOSSATOR_SAE": str(run),
        "GLOSSATOR_DATA_DIR": str(tmp_path / "data"),
        "GLOSSATOR_DEVICE": "cpu",
    }
    args = ("activations", "hello world", "--features", "0,1", "--json")
    picked = run_cli(*args, env={**env, "GLOSSATOR_HOOKPOINT": "layers.2"})
    assert picked.returncode == 0, picked.stderr
    assert json.loads(picked.stdout)["hookpoint"] == "layers.2"
    unset = run_cli(*args, env=env)
    assert unset.returncode != 0 and "GLOSSATOR_HOOKPOINT=layers.1" in unset.stderr
    assert "load_sae(" not in unset.stderr and "Traceback" not in unset.stderr
    state = run_cli(*args, env={**env, "GLOSSATOR_SAE": str(run / "state.pt")})
    assert state.returncode != 0 and "sparsify training-state file" in state.stderr
