"""Hookpoints mean what TransformerLens means on every supported family (tiny random
models built from transformers configs): attn + mlp is the residual update, `embed` is
block 0's input, `resid_mid` the residual between attention and MLP, `mlp_in` the MLP's
normed input, `attn.z` the per-head outputs before the output projection; each is written
where it is read."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import transformers
from torch import nn

from probes.hookpoints import (
    UnknownHookpointError,
    decoder_layers,
    hookpoint_width,
    run_to_hookpoints,
)
from probes.splice import spliced

N_LAYERS = 2
SMALL = dict(vocab_size=64, num_hidden_layers=N_LAYERS, num_attention_heads=2)
LLAMA_LIKE = dict(SMALL, hidden_size=16, intermediate_size=32, num_key_value_heads=1)
CONFIGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(vocab_size=64, n_embd=16, n_layer=2, n_head=2)),
    "pythia": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        dict(SMALL, hidden_size=16, intermediate_size=32),
    ),
    "neox-serial": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        dict(SMALL, hidden_size=16, intermediate_size=32, use_parallel_residual=False),
    ),
    "llama": ("LlamaConfig", "LlamaForCausalLM", LLAMA_LIKE),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", LLAMA_LIKE),
    # head_dim 12: n_heads * d_head (24) differs from d_model (16), as in real Gemmas
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(LLAMA_LIKE, head_dim=12)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(LLAMA_LIKE, head_dim=12)),
}
# The norm that reads the residual before the MLP (TransformerLens' ln2).
PRE_MLP_NORM = {
    "gpt2": "ln_2",
    "pythia": "post_attention_layernorm",
    "neox-serial": "post_attention_layernorm",
    "llama": "post_attention_layernorm",
    "qwen2": "post_attention_layernorm",
    "gemma2": "pre_feedforward_layernorm",
    "gemma3": "pre_feedforward_layernorm",
}
NEW_SITES = ("attn.z", "resid_mid", "mlp_in")


@pytest.fixture(scope="module", params=list(CONFIGS))
def family(request: pytest.FixtureRequest) -> tuple[str, nn.Module]:
    config_class, model_class, kwargs = CONFIGS[request.param]
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(**kwargs)
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():  # norms away from identity, so that reading before one shows
        for name, param in model.named_parameters():
            if "norm" in name or "ln" in name:
                param.normal_(0.5, 0.3)
    return request.param, model


def ids(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, 64, (2, 7), generator=generator)
    return input_ids, torch.ones_like(input_ids)


def names_of(model: nn.Module, *sites: str) -> list[str]:
    names = ["embed"]
    for layer, block in enumerate(decoder_layers(model)):
        for site in sites:
            if site == "resid_mid" and getattr(block, "use_parallel_residual", False):
                continue
            names.append(f"layers.{layer}" if site == "resid" else f"layers.{layer}.{site}")
    return names


def read(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    input_ids, mask = ids(model)
    return {k: v.clone() for k, v in run_to_hookpoints(model, input_ids, mask, names).items()}


def test_attn_plus_mlp_is_the_residual_update(family: tuple[str, nn.Module]) -> None:
    _, model = family
    acts = read(model, names_of(model, "attn", "mlp", "resid"))
    before = acts["embed"]
    for layer in range(N_LAYERS):
        after = acts[f"layers.{layer}"]
        update = acts[f"layers.{layer}.attn"] + acts[f"layers.{layer}.mlp"]
        torch.testing.assert_close(update, after - before, rtol=0, atol=1e-5)
        assert float((after - before).abs().max()) > 1e-3  # the test is not vacuous
        before = after


def test_hookpoints_mean_what_transformer_lens_means(family: tuple[str, nn.Module]) -> None:
    name, model = family
    input_ids, mask = ids(model)
    with torch.no_grad():
        hidden = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    acts = read(model, names_of(model, "attn.z", "attn", "resid_mid", "mlp_in", "mlp", "resid"))
    # blocks.0.hook_resid_pre: the embeddings as block 0 gets them (GPT-2's positions
    # added, Gemma's sqrt(d_model) scale applied), which is hidden_states[0]
    torch.testing.assert_close(acts["embed"], hidden.hidden_states[0], rtol=0, atol=0)
    before = acts["embed"]
    block: Any
    for layer, block in enumerate(decoder_layers(model)):
        at = f"layers.{layer}"
        norm = getattr(block, PRE_MLP_NORM[name])
        attention = next(
            getattr(block, n) for n in ("self_attn", "attn", "attention") if hasattr(block, n)
        )
        out_proj = next(
            getattr(attention, n) for n in ("o_proj", "c_proj", "dense") if hasattr(attention, n)
        )
        z = acts[f"{at}.attn.z"]
        assert z.shape[-1] == hookpoint_width(model, f"{at}.attn.z")
        with torch.no_grad():
            raw_attention = out_proj(z)  # hook_z: the input of W_O
            if hasattr(block, "post_feedforward_layernorm"):  # Gemma: hook_attn_out is normed
                raw_attention = block.post_attention_layernorm(raw_attention)
            torch.testing.assert_close(acts[f"{at}.attn"], raw_attention, rtol=0, atol=1e-6)
            if getattr(block, "use_parallel_residual", False):
                mlp_input = norm(before)  # parallel: the MLP reads the block's input
            else:
                mid = acts[f"{at}.resid_mid"]
                torch.testing.assert_close(mid, before + acts[f"{at}.attn"], rtol=0, atol=0)
                mlp_input = norm(mid)  # ln2.hook_normalized (with the norm's weights)
            torch.testing.assert_close(acts[f"{at}.mlp_in"], mlp_input, rtol=0, atol=1e-6)
        before = acts[at]


@pytest.mark.parametrize("site", ("embed", *NEW_SITES))
def test_new_hookpoints_are_written_where_they_are_read(
    family: tuple[str, nn.Module], site: str
) -> None:
    _, model = family
    point = "embed" if site == "embed" else f"layers.1.{site}"
    block = decoder_layers(model)[1]
    if site == "resid_mid" and getattr(block, "use_parallel_residual", False):
        with pytest.raises(UnknownHookpointError, match="resid_mid"):  # none to read: refused
            read(model, [point])
        return
    names = [point, "layers.1", "layers.1.mlp"]
    clean = read(model, names)
    input_ids, _ = ids(model)
    with spliced(model, point, torch.ones_like(input_ids, dtype=torch.bool), lambda x: 2 * x):
        doubled = read(model, names)
    torch.testing.assert_close(doubled[point], 2 * clean[point], rtol=0, atol=1e-5)
    assert not torch.allclose(doubled["layers.1"], clean["layers.1"], atol=1e-4)
    if site == "resid_mid":  # the residual itself carries the written value on
        torch.testing.assert_close(
            doubled["layers.1"], doubled[point] + doubled["layers.1.mlp"], rtol=0, atol=1e-5
        )
