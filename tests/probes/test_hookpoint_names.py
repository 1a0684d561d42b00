"""Hook names map to glossator's hookpoints by their meaning (TransformerLens/SAELens
names, Hugging Face block paths), and a name glossator cannot map is an error naming it,
at load time, never a hookpoint of None that later becomes the default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from identifiers.hookpoints import (
    UnknownHookNameError,
    hook_name_from_hookpoint,
    resolve_hook_name,
)
from sae.base import SAEError
from sae.loading import load_sae

D_IN, D_SAE = 8, 16

MAPPED = [
    ("blocks.0.hook_resid_pre", "embed"),
    ("blocks.4.hook_resid_pre", "layers.3"),
    ("blocks.3.hook_resid_mid", "layers.3.resid_mid"),
    ("blocks.3.hook_resid_post", "layers.3"),
    ("blocks.3.hook_attn_out", "layers.3.attn"),
    ("blocks.3.hook_mlp_out", "layers.3.mlp"),
    ("blocks.3.ln2.hook_normalized", "layers.3.mlp_in"),
    ("blocks.3.attn.hook_z", "layers.3.attn.z"),
    ("model.layers.3", "layers.3"),  # what SAELens' AutoModel path writes
    ("transformer.h.3", "layers.3"),
    ("gpt_neox.layers.3", "layers.3"),
    ("layers.3.mlp_in", "layers.3.mlp_in"),  # ours, as a transcoder's input names it
    ("embed", "embed"),
]
UNKNOWN = [
    "blocks.3.hook_mlp_in",
    "blocks.3.ln1.hook_normalized",
    "blocks.3.attn.hook_q",
    "model.layers.3.mlp",  # a module's raw output: not the residual's share on Gemma
    "hook_embed",
    "layers.3.mlp_out",
]


@pytest.mark.parametrize(("hook_name", "ours"), MAPPED)
def test_hook_names_map_by_meaning(hook_name: str, ours: str) -> None:
    assert resolve_hook_name(hook_name) == ours


@pytest.mark.parametrize(
    "ours",
    [
        "embed",
        "layers.2",
        "layers.2.attn",
        "layers.2.attn.z",
        "layers.2.resid_mid",
        "layers.2.mlp_in",
        "layers.2.mlp",
    ],
)
def test_our_names_have_transformer_lens_names_that_map_back(ours: str) -> None:
    hook_name = hook_name_from_hookpoint(ours)
    assert hook_name is not None and hook_name.startswith("blocks.")
    assert resolve_hook_name(hook_name) == ours


@pytest.mark.parametrize("hook_name", UNKNOWN)
def test_an_unknown_hook_name_is_an_error_listing_the_known_ones(hook_name: str) -> None:
    with pytest.raises(UnknownHookNameError) as error:
        resolve_hook_name(hook_name)
    message = str(error.value)
    assert repr(hook_name) in message
    for known in ("layers.N.mlp_in", "blocks.N.hook_resid_post", "model.layers.N"):
        assert known in message


def write_saelens(folder: Path, hook_name: str | None, d_in: int = D_IN) -> Path:
    """A standard SAELens 6 folder whose metadata records `hook_name` (none if None)."""
    folder.mkdir(parents=True)
    cfg = {
        "architecture": "standard",
        "d_in": d_in,
        "d_sae": D_SAE,
        "dtype": "float32",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "metadata": {"sae_lens_version": "6.5.1"},
    }
    if hook_name is not None:
        cfg["metadata"] = {"hook_name": hook_name, "sae_lens_version": "6.5.1"}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    tensors = {
        "W_enc": torch.randn(d_in, D_SAE),
        "b_enc": torch.zeros(D_SAE),
        "W_dec": torch.randn(D_SAE, d_in),
        "b_dec": torch.zeros(d_in),
    }
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    return folder


@pytest.mark.parametrize(("hook_name", "ours"), MAPPED[:9])
def test_a_saelens_sae_loads_at_the_hookpoint_its_hook_name_means(
    tmp_path: Path, hook_name: str, ours: str
) -> None:
    sae = load_sae(write_saelens(tmp_path / "sae", hook_name))
    assert sae.cfg.hookpoint == ours


@pytest.mark.parametrize("hook_name", UNKNOWN[:4])
def test_a_saelens_sae_with_an_unknown_hook_name_is_refused(tmp_path: Path, hook_name: str) -> None:
    with pytest.raises(SAEError, match=rf"{tmp_path}.*unknown hook name {hook_name!r}"):
        load_sae(write_saelens(tmp_path / "sae", hook_name))
