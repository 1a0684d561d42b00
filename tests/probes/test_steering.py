"""Steering experiments (probes/steering.py) on the tiny real Llama, and one on the real
default SmolLM2: what adding a feature's decoder direction does to the predictions."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from errors import UserError
from probes.hookpoints import decoder_layers, run_to_hookpoints
from probes.model import SubjectModel
from probes.sae_runner import FeatureIndexError
from probes.steering import (
    PLAUSIBLE_PROB,
    Steering,
    SteeringError,
    SteeringResult,
    steer_texts,
)
from sae.architectures.standard import StandardSAE
from sae.base import SAEConfig, SparseAutoencoder, SparseCodes
from sae.registry import build_sae
from tests.steering_helpers import (
    last_layer,
    one_feature_sae,
    promotes_itself,
    self_promoting_token,
    token_direction,
)

D_MODEL = 32
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "red green blue",
    "def add(a, b):\n    return a + b  # numbers one two three 42",
    "A fortune a day keeps the bugs away; never trust a computer you cannot lift.",
    "The",  # one token
]


def random_sae(seed: int = 0, d_sae: int = 16, **fields: Any) -> SparseAutoencoder:
    """A standard ReLU SAE on the tiny model's residual, random unit decoder rows."""
    sae = build_sae(SAEConfig(architecture="standard", d_in=D_MODEL, d_sae=d_sae, **fields))
    sae.init_weights(seed)
    return sae


def clean_logits(subject: SubjectModel, text: str) -> torch.Tensor:
    ids = subject.prefix_ids + subject.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        return subject.model(input_ids=torch.tensor([ids])).logits[0]


def hooks_left(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def only_token(subject: SubjectModel, text: str) -> None:
    ids = subject.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{text!r} should be one token, is {ids}"


def clean_at(subject: SubjectModel, text: str, hp: str) -> torch.Tensor:
    """[T, D]: the text's clean activations at `hp`, prefix included, read by hand."""
    ids = subject.prefix_ids + subject.tokenizer(text, add_special_tokens=False)["input_ids"]
    ids_BT = torch.tensor([ids])
    return run_to_hookpoints(subject.model, ids_BT, torch.ones_like(ids_BT), [hp])[hp][0]


def activation_at_last(subject: SubjectModel, sae: SparseAutoencoder, text: str, hp: str) -> Any:
    """The SAE's codes [d_sae] at the text's last token, read at `hp` by hand."""
    with torch.inference_mode():
        return sae.encode(clean_at(subject, text, hp)[-1:])[0]


@contextmanager
def block_inputs(model: torch.nn.Module, layer: int) -> Iterator[list[torch.Tensor]]:
    """What block `layer` reads ([B, T, D] per forward): the residual after `layer - 1`."""
    seen: list[torch.Tensor] = []

    def keep(_module: Any, args: Any, kwargs: Any) -> None:
        seen.append((args[0] if args else kwargs["hidden_states"]).clone())

    handle = decoder_layers(model)[layer].register_forward_pre_hook(keep, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def the_steered_row(seen: list[torch.Tensor], clean_TD: torch.Tensor) -> torch.Tensor:
    """Of the one forward's two rows (a text clean and steered), the one that moved."""
    (both_2TD,) = seen
    moved = [bool((row_TD - clean_TD).abs().max() > 1e-4) for row_TD in both_2TD]
    assert sorted(moved) == [False, True]
    return both_2TD[moved.index(True)]


# -- nothing added, nothing changed ----------------------------------------------------------


def test_strength_zero_changes_nothing(tiny_llama: Any) -> None:
    hooks = hooks_left(tiny_llama.model)  # other tests' forwards may leave transformers' own
    results = steer_texts(
        tiny_llama,
        random_sae(),
        "layers.1",
        TEXTS,
        Steering(feature=3, strength=0.0),
        continuation_tokens=8,
    )
    assert [r.text for r in results] == TEXTS
    for result in results:
        assert result.kl_last < 1e-9 and result.kl_mean < 1e-9
        assert result.steered_continuation == result.clean_continuation
        assert result.clean_continuation  # 8 greedy tokens of a random model: not empty
        assert len(result.promoted) == len(result.demoted) == 10
        assert all(abs(s.delta_logprob) < 1e-5 for s in result.promoted + result.demoted)
    assert hooks_left(tiny_llama.model) == hooks


@pytest.fixture(scope="module")
def sharp_llama(tiny_llama: Any) -> SubjectModel:
    """The tiny Llama with sharp attention: a random model attends almost uniformly, so
    token positions (and a wrong position for a padded row's new token) barely matter."""
    model = copy.deepcopy(tiny_llama.model)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                weight.mul_(8.0)
    return dataclasses.replace(tiny_llama, model=model)


def test_batched_equals_one_at_a_time_and_clean_is_greedy_generate(sharp_llama: Any) -> None:
    steering = Steering(feature=5, strength=3.0)
    sae = random_sae(seed=1)
    batched = steer_texts(
        sharp_llama, sae, "layers.2", TEXTS, steering, batch_size=3, continuation_tokens=8
    )
    alone = [
        steer_texts(sharp_llama, sae, "layers.2", [t], steering, continuation_tokens=8)[0]
        for t in TEXTS
    ]
    assert any(r.steered_continuation != r.clean_continuation for r in batched)
    for got, want in zip(batched, alone, strict=True):
        assert got.text == want.text
        assert got.kl_last == pytest.approx(want.kl_last, rel=1e-4, abs=1e-7)
        assert got.kl_mean == pytest.approx(want.kl_mean, rel=1e-4, abs=1e-7)
        assert [s.token_id for s in got.promoted[:5]] == [s.token_id for s in want.promoted[:5]]
        assert [s.token_id for s in got.demoted[:5]] == [s.token_id for s in want.demoted[:5]]
        assert got.clean_continuation == want.clean_continuation
        assert got.steered_continuation == want.steered_continuation
    # A one-token text has one position to average over: the prefix's are never counted.
    only_token(sharp_llama, TEXTS[4])
    assert batched[4].kl_mean == pytest.approx(batched[4].kl_last, rel=1e-6)
    assert batched[4].kl_last > 1e-4
    # The clean rows decode as transformers' own greedy generate does, checked on texts
    # shorter than others of their group (groups of 3, longest first: 3 2 0 | 1 4).
    tokenizer = sharp_llama.tokenizer
    for i in (0, 1, 4):
        text, result = TEXTS[i], batched[i]
        ids = sharp_llama.prefix_ids + tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            out = sharp_llama.model.generate(
                torch.tensor([ids]),
                max_new_tokens=8,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[0, len(ids) :].tolist()
        if tokenizer.eos_token_id in new:
            new = new[: new.index(tokenizer.eos_token_id)]
        want = tokenizer.decode(new, clean_up_tokenization_spaces=False)
        assert result.clean_continuation == want


# -- what is added, and where ----------------------------------------------------------------


def _decoder_norms_not_one(sae: SparseAutoencoder) -> SparseAutoencoder:
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, sae.d_sae)[:, None])
    return sae


# SAE config fields of each way a dictionary scales what one unit of a feature adds.
SCALINGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "decoder_norm": {"rescale_acts_by_decoder_norm": True},
    "constant_norm_rescale": {"normalize_activations": "constant_norm_rescale"},
    "layer_norm": {"normalize_activations": "layer_norm"},
}


@pytest.mark.parametrize("how", list(SCALINGS))
def test_strength_adds_d_f_at_the_hookpoint(tiny_llama: Any, how: str) -> None:
    sae = _decoder_norms_not_one(random_sae(seed=2, **SCALINGS[how]))
    text, feature, strength = TEXTS[0], 7, 2.5
    x_TD = clean_at(tiny_llama, text, "layers.1")
    row_D = sae.W_dec[feature].detach()
    per_unit_TD = {
        "plain": row_D.expand_as(x_TD),
        "decoder_norm": (row_D / row_D.norm()).expand_as(x_TD),
        "constant_norm_rescale": row_D * x_TD.norm(dim=-1, keepdim=True) / D_MODEL**0.5,
        "layer_norm": row_D * x_TD.std(dim=-1, keepdim=True),
    }[how]
    with block_inputs(tiny_llama.model, 2) as seen:
        steer_texts(
            tiny_llama,
            sae,
            "layers.1",
            [text],
            Steering(feature=feature, strength=strength),
            continuation_tokens=1,
        )
    steered_TD = the_steered_row(seen, x_TD)
    n_prefix = len(tiny_llama.prefix_ids)
    torch.testing.assert_close(steered_TD[:n_prefix], x_TD[:n_prefix])  # the prefix: never
    torch.testing.assert_close(
        steered_TD[n_prefix:] - x_TD[n_prefix:],
        strength * per_unit_TD[n_prefix:],
        atol=1e-4,
        rtol=1e-4,
    )


def mlp_transcoder(layer: int, seed: int) -> SparseAutoencoder:
    """A random transcoder of the tiny model's MLP in block `layer`."""
    sae = build_sae(
        SAEConfig(
            architecture="transcoder",
            d_in=D_MODEL,
            d_sae=8,
            apply_b_dec_to_input=False,
            hookpoint=f"layers.{layer}.mlp_in",
            output_hookpoint=f"layers.{layer}.mlp",
        )
    )
    sae.init_weights(seed)
    return sae


def test_transcoder_writes_its_output_hookpoint(tiny_llama: Any) -> None:
    sae = mlp_transcoder(layer=1, seed=3)
    text = TEXTS[1]
    clean_TD = clean_at(tiny_llama, text, "layers.1")
    with block_inputs(tiny_llama.model, 2) as seen:
        steer_texts(
            tiny_llama,
            sae,
            "layers.1.mlp_in",
            [text],
            Steering(feature=2, strength=4.0),
            continuation_tokens=1,
        )
    steered_TD = the_steered_row(seen, clean_TD)
    n_prefix = len(tiny_llama.prefix_ids)
    # The block's output is attention's residual plus the MLP's output, plus 4 d_f.
    expected_D = 4.0 * sae.W_dec[2].detach()
    torch.testing.assert_close(steered_TD[:n_prefix], clean_TD[:n_prefix])
    torch.testing.assert_close(
        steered_TD[n_prefix:] - clean_TD[n_prefix:], expected_D.expand_as(clean_TD[n_prefix:])
    )


# -- clamping --------------------------------------------------------------------------------


def _kl_last(
    subject: SubjectModel, sae: SparseAutoencoder, hp: str, text: str, **how: Any
) -> float:
    steering = Steering(**how)
    return steer_texts(subject, sae, hp, [text], steering, continuation_tokens=1)[0].kl_last


def test_clamp_to_the_current_activation_changes_nothing(tiny_llama: Any) -> None:
    sae = _decoder_norms_not_one(random_sae(seed=4, rescale_acts_by_decoder_norm=True))
    with torch.no_grad():
        sae.b_enc.fill_(0.5)  # every feature fires a little
    text = "The"  # one token: the only steered position, so one activation to clamp to
    only_token(tiny_llama, text)
    codes_F = activation_at_last(tiny_llama, sae, text, "layers.1")
    feature = int(codes_F.argmax())
    current = float(codes_F[feature])
    assert current > 0.1
    assert _kl_last(tiny_llama, sae, "layers.1", text, feature=feature, clamp=current) < 1e-6
    assert _kl_last(tiny_llama, sae, "layers.1", text, feature=feature, clamp=current + 30) > 1e-3
    assert _kl_last(tiny_llama, sae, "layers.1", text, feature=feature, clamp=0.0) > 1e-6


def test_clamping_an_inactive_feature_adds_it(tiny_llama: Any) -> None:
    sae = random_sae(seed=5)
    with torch.no_grad():
        sae.b_enc[6] = -1e3  # feature 6 never fires
    clamped = steer_texts(
        tiny_llama, sae, "layers.1", TEXTS, Steering(6, clamp=5.0), continuation_tokens=6
    )
    added = steer_texts(
        tiny_llama, sae, "layers.1", TEXTS, Steering(6, strength=5.0), continuation_tokens=6
    )
    for a, b in zip(clamped, added, strict=True):
        assert a.kl_mean == pytest.approx(b.kl_mean, rel=1e-5)
        assert a.steered_continuation == b.steered_continuation
        assert a.kl_mean > 1e-4


def test_transcoder_clamp_reads_its_input_hookpoint(tiny_llama: Any) -> None:
    sae = mlp_transcoder(layer=2, seed=6)
    with torch.no_grad():
        sae.b_enc.fill_(0.5)
    text = "The"
    only_token(tiny_llama, text)
    codes_F = activation_at_last(tiny_llama, sae, text, "layers.2.mlp_in")
    feature = int(codes_F.argmax())
    current = float(codes_F[feature])
    hp = "layers.2.mlp_in"
    assert _kl_last(tiny_llama, sae, hp, text, feature=feature, clamp=current) < 1e-6
    assert _kl_last(tiny_llama, sae, hp, text, feature=feature, clamp=current + 30) > 1e-3


# -- a feature whose effect is known ---------------------------------------------------------


def check_token_takes_over(
    subject: SubjectModel, token_id: int, hookpoint: str, strength: float
) -> list[SteeringResult]:
    sae = one_feature_sae(subject, hookpoint, token_direction(subject, token_id))
    texts = ["The quick brown fox jumps over", "Colours: red, green"]
    results = steer_texts(
        subject,
        sae,
        hookpoint,
        texts,
        Steering(feature=2, strength=strength),
        continuation_tokens=6,
        batch_size=2,
    )
    token = subject.tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
    for result in results:
        assert result.promoted[0].token_id == token_id
        assert result.promoted[0].token == token
        assert result.steered_continuation == token * 6  # steered at every new token too
        assert token not in result.clean_continuation
    return results


def test_token_direction_takes_over_the_tiny_model(tiny_llama: Any) -> None:
    token_id = self_promoting_token(tiny_llama)
    check_token_takes_over(tiny_llama, token_id, last_layer(tiny_llama), strength=1e3)


@pytest.mark.slow
def test_token_direction_takes_over_smollm2(default_model: Any) -> None:
    (token_id,) = default_model.tokenizer(" cat", add_special_tokens=False)["input_ids"]
    assert promotes_itself(default_model, token_id)
    # About a token's residual norm there (~550): far larger, and the final RMSNorm shrinks
    # the clean logits so much that tokens the model ruled out gain the most log-probability.
    for result in check_token_takes_over(default_model, token_id, "layers.29", strength=300.0):
        assert result.steered_continuation == " cat" * 6
        assert result.promoted[0].steered_prob > 0.5
        assert result.kl_last > 1.0
    # Far past that, the ranks still name tokens a reader could see: promoted ones steering
    # made plausible, demoted ones that were plausible (never p ~ 1e-9 leftovers).
    sae = one_feature_sae(default_model, "layers.29", token_direction(default_model, token_id))
    (huge,) = steer_texts(
        default_model, sae, "layers.29", ["The dog sat on the"],
        Steering(feature=2, strength=1e4), continuation_tokens=1,
    )  # fmt: skip
    assert huge.promoted[0].token_id == token_id
    assert all(s.steered_prob >= PLAUSIBLE_PROB for s in huge.promoted)
    assert all(math.exp(math.log(s.steered_prob) - s.delta_logprob) >= PLAUSIBLE_PROB * 0.99
               for s in huge.demoted)  # fmt: skip


# -- bad input -------------------------------------------------------------------------------


class _FailingSAE(StandardSAE):
    """A real ReLU SAE whose encoder breaks: an error raised inside the forward."""

    def encode_sparse(self, x: torch.Tensor) -> SparseCodes:
        raise RuntimeError("encoder broke")


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: Steering(feature=0), SteeringError, "exactly one of strength"),
        (lambda: Steering(feature=0, strength=1.0, clamp=2.0), SteeringError, "exactly one"),
        (lambda: Steering(feature=0, strength=float("nan")), SteeringError, "finite"),
        (lambda: Steering(feature=0, clamp=float("inf")), SteeringError, "finite"),
    ],
)
def test_bad_steering_is_refused(make: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize(
    ("sae_fields", "feature", "texts", "hookpoint", "kwargs", "error", "message"),
    [
        ({}, 16, TEXTS, "layers.1", {}, FeatureIndexError, r"valid indices 0\.\.15"),
        ({}, -1, TEXTS, "layers.1", {}, FeatureIndexError, "unknown feature index -1"),
        ({}, 0, [], "layers.1", {}, SteeringError, "non-empty list of texts"),
        ({}, 0, ["ok", ""], "layers.1", {}, SteeringError, r"texts \[1\] are empty"),
        ({"d_in": 48}, 0, TEXTS, "layers.1", {}, SteeringError, "48-wide activations"),
        ({}, 0, TEXTS, "layers.9", {}, UserError, "unknown hookpoint"),
        ({}, 0, TEXTS, "layers.1", {"batch_size": 0}, SteeringError, "batch_size"),
        ({}, 0, TEXTS, "layers.1", {"continuation_tokens": -1}, SteeringError, "continuation"),
    ],
)
def test_bad_requests_are_refused_and_leave_no_hooks(
    tiny_llama: Any,
    sae_fields: dict[str, Any],
    feature: int,
    texts: list[str],
    hookpoint: str,
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    before = clean_logits(tiny_llama, TEXTS[0])
    hooks = hooks_left(tiny_llama.model)
    cfg = {"architecture": "standard", "d_in": D_MODEL, "d_sae": 16, **sae_fields}
    sae = build_sae(SAEConfig(**cfg))
    with pytest.raises(error, match=message):
        steer_texts(tiny_llama, sae, hookpoint, texts, Steering(feature, strength=1.0), **kwargs)
    assert hooks_left(tiny_llama.model) == hooks
    torch.testing.assert_close(clean_logits(tiny_llama, TEXTS[0]), before, rtol=0, atol=0)


def test_transcoder_without_output_hookpoint_is_refused(tiny_llama: Any) -> None:
    sae = build_sae(
        SAEConfig(architecture="transcoder", d_in=D_MODEL, d_sae=8, apply_b_dec_to_input=False)
    )
    with pytest.raises(SteeringError, match="no output hookpoint"):
        steer_texts(tiny_llama, sae, "layers.1.mlp_in", TEXTS, Steering(0, strength=1.0))


def test_error_inside_the_forward_removes_the_hooks(tiny_llama: Any) -> None:
    before = clean_logits(tiny_llama, TEXTS[0])
    hooks = hooks_left(tiny_llama.model)
    sae = _FailingSAE(SAEConfig(architecture="standard", d_in=D_MODEL, d_sae=8))
    with pytest.raises(RuntimeError, match="encoder broke"):
        steer_texts(tiny_llama, sae, "layers.1", TEXTS, Steering(0, clamp=1.0))
    assert hooks_left(tiny_llama.model) == hooks
    torch.testing.assert_close(clean_logits(tiny_llama, TEXTS[0]), before, rtol=0, atol=0)


def test_long_texts_run_in_groups_whose_logits_fit_the_budget() -> None:
    from probes.steering import LOGITS_BUDGET, _groups

    vocab = 49152  # SmolLM2's: one 1,000-token text's two rows take ~98M logits
    assert 2 * 1000 * vocab < LOGITS_BUDGET < 2 * 2 * 1000 * vocab
    lengths = [1000, 1000, 12, 10, 9]
    assert _groups([0, 1, 2, 3, 4], lengths, 8, vocab) == [[0], [1], [2, 3, 4]]
    assert _groups([2, 3, 4], lengths, 2, vocab) == [[2, 3], [4]]  # and the batch size
    assert _groups([0], [10**6], 8, vocab) == [[0]]  # too long even alone: alone
