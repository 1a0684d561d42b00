"""Hook names people put in configs map to glossator's hookpoints where that is exact:
TransformerLens' bridge / circuit-tracer `blocks.N.mlp.hook_in` always (the MLP's input),
and a module's raw output (`model.layers.N.mlp`, `blocks.N.mlp.hook_out`, a sparsify
folder named `layers.N.mlp`) only on models where that output is what the hookpoint reads
(Llama: yes; Gemma-2/3, which norm the MLP's output first: no, and refused)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from safetensors.torch import save_file
from torch import nn

from identifiers.hookpoints import (
    HookNameNeedsModelError,
    UnknownHookNameError,
    hook_name_from_hookpoint,
    resolve_hook_name,
)
from probes.hookpoints import decoder_layers, module_hookpoints, run_to_hookpoints
from sae import SAEError, load_sae
from sae.formats.inspect import inspect_path
from tests.probes.test_hookpoints_architectures import CONFIGS
from tests.sae_helpers import sparsify_cfg

D, D_SAE = 16, 32  # the tiny families' width (CONFIGS)


def tiny(family: str) -> nn.Module:
    config_class, model_class, kwargs = CONFIGS[family]
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**kwargs))
    with torch.no_grad():  # norms away from identity, so that reading before one shows
        for name, param in model.named_parameters():
            if "norm" in name or "ln" in name:
                param.normal_(0.5, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def llama() -> nn.Module:
    return tiny("llama")


@pytest.fixture(scope="module")
def gemma() -> nn.Module:
    return tiny("gemma2")


def test_the_mlp_input_under_its_bridge_name() -> None:
    assert resolve_hook_name("blocks.3.mlp.hook_in") == "layers.3.mlp_in"
    assert hook_name_from_hookpoint("layers.3.mlp_in") == "blocks.3.ln2.hook_normalized"
    # HookedTransformer's hook_mlp_in is the residual entering ln2, its bridge's the MLP's
    # normed input: ambiguous, so refused.
    with pytest.raises(UnknownHookNameError, match=r"'blocks\.3\.hook_mlp_in'"):
        resolve_hook_name("blocks.3.hook_mlp_in")


@pytest.mark.parametrize("name", ["model.layers.3.mlp", "blocks.3.mlp.hook_out"])
def test_a_module_output_without_the_model_needs_the_model(name: str) -> None:
    with pytest.raises(HookNameNeedsModelError, match=rf"{name!r}.*blocks\.N\.hook_resid_post"):
        resolve_hook_name(name)


def _module_output(model: nn.Module, name: str) -> nn.Module:
    """The module a table name refers to (bridge names: the block's mlp / attention)."""
    if name.startswith("blocks."):
        _, layer, child, _ = name.split(".")
        block = decoder_layers(model)[int(layer)]
        names = ("mlp",) if child == "mlp" else ("self_attn", "attn", "attention")
        return next(getattr(block, n) for n in names if hasattr(block, n))
    base: nn.Module = getattr(model, "base_model", model)
    try:
        return model.get_submodule(name)
    except AttributeError:
        return base.get_submodule(name)


@pytest.mark.parametrize("family", list(CONFIGS))
def test_each_listed_module_outputs_exactly_its_hookpoint(family: str) -> None:
    model = tiny(family)
    table = module_hookpoints(model)
    input_ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(input_ids)
    expected = run_to_hookpoints(model, input_ids, mask, sorted(set(table.values())))
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name in table:

        def keep(_m: Any, _i: Any, output: Any, name: str = name) -> None:
            seen[name] = (output[0] if isinstance(output, tuple) else output).clone()

        handles.append(_module_output(model, name).register_forward_hook(keep))
    try:
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=mask)
    finally:
        for handle in handles:
            handle.remove()
    for name, hookpoint in table.items():
        torch.testing.assert_close(seen[name], expected[hookpoint], rtol=0, atol=0)
    gemma_like = family.startswith("gemma")
    assert ("blocks.1.mlp.hook_out" in table) is not gemma_like


def test_llama_and_gemma_tables(llama: nn.Module, gemma: nn.Module) -> None:
    ll, gg = module_hookpoints(llama), module_hookpoints(gemma)
    assert ll["model.layers.1.mlp"] == ll["layers.1.mlp"] == "layers.1.mlp"  # SAELens, sparsify
    assert ll["model.layers.1.self_attn"] == ll["blocks.1.attn.hook_out"] == "layers.1.attn"
    assert ll["model.layers.1"] == "layers.1"
    assert "model.layers.1.mlp" not in gg and "model.layers.1.self_attn" not in gg
    assert gg["model.layers.1.post_feedforward_layernorm"] == "layers.1.mlp"
    assert gg["model.layers.1.post_attention_layernorm"] == "layers.1.attn"


def write_saelens(
    folder: Path, hook_name: str, hook_name_out: str | None = None, d: int = D
) -> Path:
    """A standard SAE, or with `hook_name_out` a transcoder, in SAELens 6's format."""
    meta: dict[str, Any] = {"hook_name": hook_name, "sae_lens_version": "6.12.0"}
    cfg: dict[str, Any] = {
        "architecture": "standard" if hook_name_out is None else "transcoder",
        "d_in": d,
        "d_sae": D_SAE,
        "dtype": "float32",
        "apply_b_dec_to_input": hook_name_out is None,
        "normalize_activations": "none",
        "metadata": meta,
    }
    if hook_name_out is not None:
        cfg["d_out"] = d
        meta["hook_name_out"] = hook_name_out
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    g = torch.Generator().manual_seed(0)
    tensors = {
        "W_enc": torch.randn(d, D_SAE, generator=g),
        "b_enc": torch.zeros(D_SAE),
        "W_dec": torch.randn(D_SAE, d, generator=g),
        "b_dec": torch.zeros(d),
    }
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    return folder


def test_the_configured_sae_is_mapped_against_the_subject_model(
    tmp_path: Path, tiny_llama: Any
) -> None:
    from runtime.loaders import open_sae
    from runtime.settings import get_settings

    folder = write_saelens(tmp_path / "sae", "model.layers.1.mlp", d=32)
    sae = open_sae(get_settings(sae=str(folder), data_dir=tmp_path / "data"), tiny_llama)
    assert sae.cfg.hookpoint == "layers.1.mlp"


def test_a_hugging_face_module_name_maps_where_exact(
    tmp_path: Path, llama: nn.Module, gemma: nn.Module
) -> None:
    folder = write_saelens(tmp_path / "sae", "model.layers.1.mlp")
    assert load_sae(folder, modules=module_hookpoints(llama)).cfg.hookpoint == "layers.1.mlp"
    with pytest.raises(SAEError, match=r"'model\.layers\.1\.mlp'.*not exactly") as error:
        load_sae(folder, modules=module_hookpoints(gemma))
    # It says which module is the hookpoint on this model.
    assert "model.layers.N.post_feedforward_layernorm -> layers.N.mlp" in str(error.value)
    with pytest.raises(SAEError, match=r"unknown hook name 'model\.layers\.1\.mlp'"):
        load_sae(folder)  # no model to tell
    report = inspect_path(folder)
    assert report["usable"] is True and report["hookpoint"] is None
    assert "only with some models" in report["reason"]


def test_a_circuit_tracer_transcoder_reads_mlp_in_and_writes_mlp(
    tmp_path: Path, llama: nn.Module, gemma: nn.Module
) -> None:
    folder = write_saelens(tmp_path / "tc", "blocks.1.mlp.hook_in", "blocks.1.mlp.hook_out")
    sae = load_sae(folder, modules=module_hookpoints(llama))
    assert (sae.cfg.hookpoint, sae.cfg.output_hookpoint) == ("layers.1.mlp_in", "layers.1.mlp")
    with pytest.raises(SAEError, match=r"hook_name_out='blocks\.1\.mlp\.hook_out'"):
        load_sae(folder, modules=module_hookpoints(gemma))
    with pytest.raises(SAEError, match=r"hook_name_out='blocks\.1\.mlp\.hook_out'"):
        load_sae(folder)


def test_a_sparsify_mlp_transcoder_is_refused_where_its_module_is_not_the_hookpoint(
    tmp_path: Path, llama: nn.Module, gemma: nn.Module
) -> None:
    folder = tmp_path / "layers.1.mlp"
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps(sparsify_cfg(D, D_SAE, 4, transcode=True)))
    g = torch.Generator().manual_seed(0)
    tensors = {
        "encoder.weight": torch.randn(D_SAE, D, generator=g),
        "encoder.bias": torch.zeros(D_SAE),
        "W_dec": torch.randn(D_SAE, D, generator=g),
        "b_dec": torch.zeros(D),
    }
    save_file(tensors, str(folder / "sae.safetensors"))
    sae = load_sae(folder, modules=module_hookpoints(llama))
    assert (sae.cfg.hookpoint, sae.cfg.output_hookpoint) == ("layers.1.mlp_in", "layers.1.mlp")
    with pytest.raises(SAEError, match=r"module 'layers\.1\.mlp'.*post_feedforward_layernorm"):
        load_sae(folder, modules=module_hookpoints(gemma))
