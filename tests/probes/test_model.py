"""Subject model loading, hookpoints and the truncated forward pass (tiny real Llama)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from probes.hookpoints import UnknownHookpointError, hookpoint_names, run_to_hookpoints
from probes.model import ModelLoadError, load_model
from probes.reader import ActivationReader

TEXTS = ["The quick brown fox.", "never trust a computer you cannot lift", "red"]


def test_loads_from_a_saved_folder(tiny_llama: Any) -> None:
    assert tiny_llama.d_model == 32
    assert tiny_llama.device.type == "cpu"
    assert not tiny_llama.model.training
    assert len(hookpoint_names(tiny_llama.model)) == 1 + 4 * 6  # embed, 6 sites per block


def test_missing_or_wrong_paths_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"not \.gguf"):
        load_model(tmp_path / "weights.bin")


@pytest.mark.parametrize("name", ["layers.9", "layer.1", "layers.1.mlp2", "embeddings"])
def test_unknown_hookpoint_lists_valid_ones(tiny_llama: Any, name: str) -> None:
    with pytest.raises(UnknownHookpointError, match=r"layers\.N.*0\.\.3"):
        ActivationReader(tiny_llama, [name])


def _batch(subject: Any) -> dict[str, torch.Tensor]:
    return dict(subject.tokenizer(TEXTS, padding=True, return_tensors="pt"))


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_truncated_forward_equals_full_forward(tiny_llama: Any, layer: int) -> None:
    enc = _batch(tiny_llama)
    full = tiny_llama.model(**enc, output_hidden_states=True)
    acts = run_to_hookpoints(
        tiny_llama.model, enc["input_ids"], enc["attention_mask"], [f"layers.{layer}"]
    )
    expected = full.hidden_states[layer + 1]
    if layer == 3:  # hidden_states[-1] has the final norm applied; compare the raw block output
        expected = _block_output(tiny_llama, enc, layer)
    torch.testing.assert_close(acts[f"layers.{layer}"], expected, rtol=0, atol=0)


def _block_output(subject: Any, enc: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    block = subject.model.model.layers[layer]
    handle = block.register_forward_hook(
        lambda _m, _i, out: seen.append(out[0] if isinstance(out, tuple) else out)
    )
    try:
        subject.model(**enc)
    finally:
        handle.remove()
    return seen[0]


def test_forward_stops_after_the_deepest_hookpoint(tiny_llama: Any) -> None:
    enc = _batch(tiny_llama)
    ran: list[str] = []
    model = tiny_llama.model
    handles = [
        model.model.layers[i].register_forward_hook(lambda *_, i=i: ran.append(f"block{i}"))
        for i in range(4)
    ]
    handles.append(model.lm_head.register_forward_hook(lambda *_: ran.append("lm_head")))
    handles.append(model.model.norm.register_forward_hook(lambda *_: ran.append("norm")))
    try:
        acts = run_to_hookpoints(
            model, enc["input_ids"], enc["attention_mask"], ["layers.1.mlp", "layers.0"]
        )
    finally:
        for h in handles:
            h.remove()
    assert ran == ["block0"], "block 1 must stop inside, after its MLP; nothing later runs"
    assert set(acts) == {"layers.1.mlp", "layers.0"}
    assert acts["layers.1.mlp"].shape == (3, enc["input_ids"].shape[1], 32)


def test_mlp_and_attn_hookpoints_read_the_submodule_outputs(tiny_llama: Any) -> None:
    enc = _batch(tiny_llama)
    block = tiny_llama.model.model.layers[2]
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        block.mlp.register_forward_hook(lambda _m, _i, o: seen.__setitem__("mlp", o)),
        block.self_attn.register_forward_hook(lambda _m, _i, o: seen.__setitem__("attn", o[0])),
    ]
    try:
        tiny_llama.model(**enc)
    finally:
        for h in hooks:
            h.remove()
    acts = run_to_hookpoints(
        tiny_llama.model, enc["input_ids"], enc["attention_mask"], ["layers.2.mlp", "layers.2.attn"]
    )
    torch.testing.assert_close(acts["layers.2.mlp"], seen["mlp"], rtol=0, atol=0)
    torch.testing.assert_close(acts["layers.2.attn"], seen["attn"], rtol=0, atol=0)


def test_reader_masks_bos_and_padding(tiny_llama: Any) -> None:
    reader = ActivationReader(tiny_llama, ["layers.1"], context_length=64, batch_size=2)
    batch = reader.tokenize(TEXTS)
    assert batch.input_ids_BT[:, 0].eq(tiny_llama.tokenizer.bos_token_id).all()
    assert not batch.valid_BT[:, 0].any(), "BOS never yields an activation"
    assert not (batch.valid_BT & ~batch.attention_mask_BT.bool()).any(), "padding never does"
    out = reader.read(TEXTS)
    for text, result in zip(TEXTS, out, strict=True):
        assert "".join(t.text for t in result.tokens) == text
        assert all(text[t.start : t.end] == t.text for t in result.tokens)
        assert result.acts_TD["layers.1"].shape == (len(result.tokens), 32)
    # batched with padding == each text alone (padding changes nothing for valid tokens)
    for text, result in zip(TEXTS, out, strict=True):
        alone = reader.read([text])[0]
        torch.testing.assert_close(alone.acts_TD["layers.1"], result.acts_TD["layers.1"])


def test_long_texts_are_windowed_with_left_context(tiny_llama: Any) -> None:
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 6)
    n_tokens = len(tiny_llama.tokenizer(text, add_special_tokens=False)["input_ids"])
    reader = ActivationReader(tiny_llama, ["layers.3"], context_length=16, window_overlap=5)
    batch = reader.tokenize([text])
    assert len(batch.row_text) > 3
    assert int(batch.valid_BT.sum()) == n_tokens, "every token counted exactly once"
    out = reader.read([text])[0]
    assert len(out.tokens) == n_tokens
    assert out.acts_TD["layers.3"].abs().sum(dim=1).gt(0).all(), "every token filled"
    # The first window's tokens match a plain forward of just those tokens.
    first = run_to_hookpoints(
        tiny_llama.model, batch.input_ids_BT[:1], batch.attention_mask_BT[:1], ["layers.3"]
    )["layers.3"][0, 1:]
    torch.testing.assert_close(out.acts_TD["layers.3"][: first.shape[0]], first)


def test_truncate_mode_warns_and_keeps_the_start(
    tiny_llama: Any, caplog: pytest.LogCaptureFixture
) -> None:
    text = " ".join(["never trust a computer"] * 20)
    reader = ActivationReader(tiny_llama, ["layers.0"], context_length=16, overflow="truncate")
    with caplog.at_level("WARNING"):
        out = reader.read([text])[0]
    assert "truncated" in caplog.text
    assert len(out.tokens) == 15  # 16 minus the BOS
    assert out.tokens[0].start == 0


def test_prefix_token_goes_before_every_window_and_is_never_read(tiny_llama_dir: Path) -> None:
    subject = load_model(tiny_llama_dir, prefix_token="</s>")
    eos = subject.tokenizer.eos_token_id
    assert subject.prefix_ids == [eos]
    reader = ActivationReader(subject, ["layers.0"], context_length=8)
    batch = reader.tokenize(["the quick brown fox jumps over the lazy dog"])
    assert len(batch.row_text) > 1
    assert batch.input_ids_BT[:, 0].eq(eos).all()
    assert not batch.valid_BT[:, 0].any()
    with pytest.raises(ModelLoadError, match="not in the model's vocabulary"):
        load_model(tiny_llama_dir, prefix_token="<nope>")
