"""Output-side evidence: logit lens and decoder-cosine neighbours against brute force."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import torch

from probes.evidence.output_side import (
    LogitLens,
    OutputSideError,
    final_norm_weight,
    logit_lens,
    model_logit_lens,
    similar_features,
    token_strings,
    unembedding,
)


def _random(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _brute_lens(
    W_dec_FD: torch.Tensor, unembed_VD: torch.Tensor, norm_D: torch.Tensor | None, n: int
) -> LogitLens:
    dirs_FD = W_dec_FD.float() * (1.0 if norm_D is None else norm_D.float())
    logits_FV = dirs_FD @ unembed_VD.float().T
    top = logits_FV.topk(n, dim=1)
    bottom = logits_FV.topk(n, dim=1, largest=False)
    return LogitLens(top.indices, top.values, bottom.indices, bottom.values)


def _brute_similar(W_dec_FD: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    unit_FD = torch.nn.functional.normalize(W_dec_FD.float(), dim=1)
    cos_FF = unit_FD @ unit_FD.T
    cos_FF.fill_diagonal_(-torch.inf)
    top = cos_FF.topk(n, dim=1)
    return top.indices, top.values


def _assert_lens_equal(got: LogitLens, want: LogitLens) -> None:
    assert torch.equal(got.promoted_ids_FN.cpu(), want.promoted_ids_FN)
    assert torch.equal(got.suppressed_ids_FN.cpu(), want.suppressed_ids_FN)
    torch.testing.assert_close(got.promoted_values_FN.cpu(), want.promoted_values_FN)
    torch.testing.assert_close(got.suppressed_values_FN.cpu(), want.suppressed_values_FN)


@pytest.mark.parametrize("with_norm", [False, True])
@pytest.mark.parametrize("chunk", [None, 1, 7, 37, 1000])
def test_logit_lens_matches_brute_force(with_norm: bool, chunk: int | None) -> None:
    W_dec_FD, unembed_VD = _random(37, 16, seed=1), _random(50, 16, seed=2)
    norm_D = _random(16, seed=3).abs() + 0.1 if with_norm else None
    got = logit_lens(W_dec_FD, unembed_VD, norm_D, n=5, chunk=chunk)
    _assert_lens_equal(got, _brute_lens(W_dec_FD, unembed_VD, norm_D, 5))
    assert got.promoted_ids_FN.dtype == torch.int64
    assert got.promoted_values_FN.dtype == torch.float32
    assert bool((got.promoted_values_FN[:, :-1] >= got.promoted_values_FN[:, 1:]).all())
    assert bool((got.suppressed_values_FN[:, :-1] <= got.suppressed_values_FN[:, 1:]).all())


def test_logit_lens_bfloat16_inputs_computed_in_float32() -> None:
    W_dec_FD = _random(23, 16, seed=4).to(torch.bfloat16)
    unembed_VD = _random(40, 16, seed=5).to(torch.bfloat16)
    got = logit_lens(W_dec_FD, unembed_VD, n=4, chunk=5)
    _assert_lens_equal(got, _brute_lens(W_dec_FD, unembed_VD, None, 4))


def test_logit_lens_progress_and_errors() -> None:
    W_dec_FD, unembed_VD = _random(10, 8, seed=6), _random(20, 8, seed=7)
    seen: list[int] = []
    logit_lens(W_dec_FD, unembed_VD, n=3, chunk=4, progress=seen.append)
    assert seen == [4, 8, 10]
    with pytest.raises(OutputSideError, match="vocabulary size"):
        logit_lens(W_dec_FD, unembed_VD, n=21)
    with pytest.raises(OutputSideError, match="decoder width"):
        logit_lens(W_dec_FD, _random(20, 9, seed=8))
    with pytest.raises(OutputSideError, match="norm weight"):
        logit_lens(W_dec_FD, unembed_VD, torch.ones(9))
    with pytest.raises(OutputSideError, match="chunk"):
        logit_lens(W_dec_FD, unembed_VD, chunk=0)


@pytest.mark.parametrize("chunk", [None, 1, 3, 7, 40, 500])
def test_similar_features_matches_brute_force(chunk: int | None) -> None:
    W_dec_FD = _random(40, 8, seed=9)
    ids_FN, cos_FN = similar_features(W_dec_FD, n=5, chunk=chunk)
    want_ids, want_cos = _brute_similar(W_dec_FD, 5)
    assert torch.equal(ids_FN, want_ids)
    torch.testing.assert_close(cos_FN, want_cos)


def test_similar_features_excludes_self_and_finds_planted_duplicate() -> None:
    W_dec_FD = _random(30, 6, seed=10)
    W_dec_FD[17] = 3.0 * W_dec_FD[5]  # same direction, other scale
    ids_FN, cos_FN = similar_features(W_dec_FD.to(torch.bfloat16), n=29, chunk=4)
    assert not bool((ids_FN == torch.arange(30)[:, None]).any())
    assert all(sorted(row) == sorted(set(range(30)) - {i}) for i, row in enumerate(ids_FN.tolist()))
    assert (int(ids_FN[5, 0]), int(ids_FN[17, 0])) == (17, 5)
    torch.testing.assert_close(cos_FN[[5, 17], 0], torch.ones(2))


def test_similar_features_errors() -> None:
    with pytest.raises(OutputSideError, match="self is excluded"):
        similar_features(_random(5, 4, seed=11), n=5)


def test_direction_equal_to_a_token_row_promotes_it(tiny_llama: Any) -> None:
    model = copy.deepcopy(tiny_llama.model)
    with torch.no_grad():  # a non-trivial final norm, so dividing by it matters
        model.model.norm.weight.copy_(_random(model.config.hidden_size, seed=12).abs() + 0.2)
    unembed_VD = unembedding(model)
    norm_D = final_norm_weight(model)
    assert norm_D is not None and unembed_VD.shape[1] == norm_D.shape[0]
    token_ids = tiny_llama.tokenizer.encode(" lazy dog", add_special_tokens=False)
    raw_FD = unembed_VD[token_ids]
    with_norm = model_logit_lens(raw_FD / norm_D, model, apply_final_norm=True, n=3)
    without_norm = model_logit_lens(raw_FD, model, apply_final_norm=False, n=3)
    assert with_norm.promoted_ids_FN[:, 0].tolist() == token_ids
    assert without_norm.promoted_ids_FN[:, 0].tolist() == token_ids
    assert token_strings(tiny_llama.tokenizer, with_norm.promoted_ids_FN[:, 0]) == [
        json.dumps(tiny_llama.tokenizer.decode([t])) for t in token_ids
    ]


def test_token_strings_are_readable(tiny_llama: Any) -> None:
    tokenizer = tiny_llama.tokenizer
    text = " lazy dog\n\tfox"
    ids = tokenizer.encode(text, add_special_tokens=False)
    shown = token_strings(tokenizer, torch.tensor(ids))
    assert "".join(json.loads(s) for s in shown) == text
    assert any(s.startswith('" ') for s in shown)  # the leading space stays visible
    assert '"\\n"' in shown or any("\\n" in s for s in shown)
    (first_byte,) = token_strings(tokenizer, tokenizer.encode("é", add_special_tokens=False)[:1])
    assert first_byte.startswith("<") and first_byte.endswith(">")  # half a character
    assert token_strings(tokenizer, [len(tokenizer) + 3]) == [f"<unused id {len(tokenizer) + 3}>"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bfloat16_matches_cpu() -> None:
    W_dec_FD = _random(300, 64, seed=13).to(torch.bfloat16)
    unembed_VD, norm_D = _random(1000, 64, seed=14), _random(64, seed=15).abs() + 0.1
    got = logit_lens(W_dec_FD.cuda(), unembed_VD, norm_D, n=8, chunk=64)
    assert got.promoted_ids_FN.device.type == "cuda"
    want = _brute_lens(W_dec_FD, unembed_VD, norm_D, 8)
    assert torch.equal(got.cpu().promoted_ids_FN, want.promoted_ids_FN)
    torch.testing.assert_close(got.cpu().promoted_values_FN, want.promoted_values_FN)
    ids_FN, cos_FN = similar_features(W_dec_FD.cuda(), n=6, chunk=64)
    want_ids, want_cos = _brute_similar(W_dec_FD, 6)
    assert torch.equal(ids_FN.cpu(), want_ids)
    torch.testing.assert_close(cos_FN.cpu(), want_cos)
