"""Promotions over several texts (probes/promotions.py) on the tiny real Llama with a
dictionary whose feature writes one token's unembedding direction: steering it must
promote that token, first, on every text."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from predicates.language import TokenIn
from predicates.output import claim_fit
from probes.promotions import MIN_GAIN, PROMOTED_TOP, promotions_of
from probes.steering import PLAUSIBLE_PROB, Steering, SteeringError, steer_texts
from tests.steering_helpers import (
    TOKEN_FEATURE,
    last_layer,
    one_feature_sae,
    self_promoting_token,
    token_direction,
)

TEXTS = ["The quick brown fox", "red green blue", "one two three four", "A fortune a day"]


@pytest.fixture(scope="module")
def token_steering(tiny_llama: Any) -> tuple[Any, Any, str, int]:
    token_id = self_promoting_token(tiny_llama)
    sae = one_feature_sae(tiny_llama, last_layer(tiny_llama), token_direction(tiny_llama, token_id))
    return tiny_llama, sae, last_layer(tiny_llama), token_id


def decode_with(subject: Any) -> Any:
    return lambda i: subject.tokenizer.decode([i], clean_up_tokenization_spaces=False)


def test_the_token_a_feature_writes_is_promoted_first(token_steering: Any) -> None:
    subject, sae, hookpoint, token_id = token_steering
    steering = Steering(TOKEN_FEATURE, strength=1000.0)
    results = steer_texts(subject, sae, hookpoint, TEXTS, steering, continuation_tokens=0,
                          keep_vocabulary=True)  # fmt: skip
    shift = results[0].vocabulary
    assert shift is not None and shift.delta_V.shape == shift.plausible_V.shape
    # The random tiny model's final norm squeezes any direction: gains stay under ln 2.
    found = promotions_of(results, decode_with(subject), min_gain=0.1)
    assert found.texts == len(TEXTS) and found.kl > 0
    assert found.promoted[0].token_id == token_id
    assert 1 <= found.promoted_count <= PROMOTED_TOP
    assert all(c.gain >= 0.1 for c in found.promoted)
    assert promotions_of(results, decode_with(subject)).promoted_count == sum(
        c.gain >= MIN_GAIN for c in found.candidates[:PROMOTED_TOP]
    )
    gains = [c.gain for c in found.candidates]
    assert gains == sorted(gains, reverse=True)
    # Every candidate was plausible after some text, clean or steered.
    plausible_V = torch.stack([r.vocabulary.plausible_V for r in results if r.vocabulary])
    assert len(found.candidates) <= int(plausible_V.any(dim=0).sum())
    # The claim that names the token hits it; one naming only unpromoted words hits none.
    token = subject.tokenizer.decode([token_id]).strip().lower()
    assert claim_fit(TokenIn(words=(token,)), found).hits >= 1
    promoted = {c.token.strip().lower() for c in found.promoted}
    other = next(
        word
        for c in found.candidates[found.promoted_count :]
        if (word := c.token.strip().lower()) and word not in promoted
    )
    assert claim_fit(TokenIn(words=(other,)), found).recalled == 0


def test_without_steering_nothing_is_promoted(token_steering: Any) -> None:
    subject, sae, hookpoint, _ = token_steering
    results = steer_texts(subject, sae, hookpoint, TEXTS, Steering(TOKEN_FEATURE, strength=0.0),
                          continuation_tokens=0, keep_vocabulary=True)  # fmt: skip
    found = promotions_of(results, decode_with(subject))
    assert found.promoted_count == 0 and found.kl < 1e-6
    assert all(abs(c.gain) < 1e-4 for c in found.candidates)
    likely = math.log(PLAUSIBLE_PROB)
    assert found.candidates and likely < 0


def test_promotions_need_the_vocabulary(token_steering: Any) -> None:
    subject, sae, hookpoint, _ = token_steering
    results = steer_texts(subject, sae, hookpoint, TEXTS[:1], Steering(TOKEN_FEATURE, strength=1),
                          continuation_tokens=0)  # fmt: skip
    with pytest.raises(SteeringError, match="keep_vocabulary"):
        promotions_of(results, decode_with(subject))
    with pytest.raises(SteeringError, match="no steering results"):
        promotions_of([], decode_with(subject))
