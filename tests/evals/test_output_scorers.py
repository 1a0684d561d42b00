"""The output scorers (evals/scorers/output.py) on the tiny real Llama with a sharp LM
head and a dictionary whose feature 2 writes one word's unembedding direction: a claim
naming that word must score, one naming another must not, and a judge reading the claim
must pick the feature's steered continuations among other features'."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from typing import Any

import pytest
import torch

from evals.core import Explained, ScoringSet
from evals.judges.predicate import PredicateJudge
from evals.runner import NoJudge, pick_judge, reads_output
from evals.scorers.detection import DetectionScorer
from evals.scorers.output import DISTRACTORS, ROUNDS, OutputPickScorer, OutputScorer
from predicates.language import TokenIn, as_dict
from probes.probe_runner import ProbeRunner
from probes.sae_runner import SAEFeatureSource
from tests.evidence_helpers import example
from tests.steering_helpers import (
    TOKEN_FEATURE,
    last_layer,
    one_feature_sae,
    promotes_itself,
    token_direction,
)

MAX_ACT = 20.0


@pytest.fixture(scope="module")
def steered(tiny_llama: Any) -> tuple[ProbeRunner, str]:
    """A runner over the sharp-headed model and the word's dictionary, and the word."""
    model = copy.deepcopy(tiny_llama.model)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)  # a random model's logits are flat
    subject = dataclasses.replace(tiny_llama, model=model)
    word_id = next(
        t
        for t in range(len(subject.tokenizer))
        if (text := subject.tokenizer.decode([t])).startswith(" ")
        and text[1:].isalpha()
        and len(text) >= 5  # not " the": a word the texts never make likely
        and promotes_itself(subject, t)
    )
    hookpoint = last_layer(subject)
    sae = one_feature_sae(subject, hookpoint, token_direction(subject, word_id))
    return ProbeRunner(SAEFeatureSource(subject, sae, hookpoint)), subject.tokenizer.decode(
        [word_id]
    )


def scoring_set() -> ScoringSet:
    quiet = [example([f"Note {i}:", " the", " red", " fox", " ran", "."], [0.0] * 6)
             for i in range(10)]  # fmt: skip
    return ScoringSet(
        feature=TOKEN_FEATURE, evidence_id="by-hand", threshold=1.0, activating=[],
        quantile_of=[], non_activating=quiet,
    )  # fmt: skip


def claim(*words: str) -> Explained:
    predicate = TokenIn(words=words)
    return Explained(
        feature=TOKEN_FEATURE, explainer="test", text=f"Promotes {predicate.describe()}.",
        output_text=f"Promotes {predicate.describe()}.", output_predicate=as_dict(predicate),
    )  # fmt: skip


def test_output_scores_the_claim_that_names_what_steering_promotes(
    steered: tuple[ProbeRunner, str],
) -> None:
    runner, word = steered
    scorer = OutputScorer(runner, lambda feature: MAX_ACT)
    judge = PredicateJudge()
    right = asyncio.run(scorer.score(claim(word.strip().lower()), scoring_set(), judge))
    assert right.error is None and right.score is not None and right.score > 0
    assert word in right.details["promoted"][:3] and right.details["precision"] >= 0.5
    assert right.probe_texts == 8  # steered once ...
    wrong = asyncio.run(scorer.score(claim("zebra", "quilt"), scoring_set(), judge))
    assert wrong.score == 0.0 and wrong.probe_texts == 0  # ... and shared by the next claim
    prose = Explained(feature=TOKEN_FEATURE, explainer="test", text="Fires on foxes.")
    unscored = asyncio.run(scorer.score(prose, scoring_set(), judge))
    assert unscored.score is None and "no output claim" in str(unscored.error)


def test_a_feature_that_never_fired_has_no_scale_to_steer_at(
    steered: tuple[ProbeRunner, str],
) -> None:
    runner, word = steered
    scorer = OutputScorer(runner, lambda feature: 0.0)
    done = asyncio.run(scorer.score(claim(word.strip().lower()), scoring_set(), PredicateJudge()))
    assert done.score is None and "never fired" in str(done.error)


def test_the_judge_picks_the_features_steered_continuations(
    steered: tuple[ProbeRunner, str],
) -> None:
    runner, word = steered
    scorer = OutputPickScorer(runner, lambda feature: MAX_ACT, features=[0, 1, 2, 3])
    judge = PredicateJudge()
    right = asyncio.run(scorer.score(claim(word.strip().lower()), scoring_set(), judge))
    assert right.error is None and right.score == 1.0, right.details
    assert word in right.details["continuations"][0]
    assert right.details["chance"] == pytest.approx(1 / (DISTRACTORS + 1))
    assert len(right.details["rounds"]) == ROUNDS
    # A claim naming nothing any option says guesses at chance: the credit splits.
    blind = asyncio.run(scorer.score(claim("zebra"), scoring_set(), judge))
    assert blind.score == pytest.approx(1 / (DISTRACTORS + 1))
    # Prose needs an LLM judge: a predicate judge says it cannot read it.
    prose = Explained(feature=TOKEN_FEATURE, explainer="test", text="Says foxes.")
    unscored = asyncio.run(scorer.score(prose, scoring_set(), judge))
    assert unscored.score is None and "output predicate" in str(unscored.error)


def test_an_output_predicate_goes_to_the_predicate_judge_only_for_output_scorers(
    steered: tuple[ProbeRunner, str],
) -> None:
    lens = claim("zebra")  # an output predicate, and no input predicate
    predicate = PredicateJudge()
    assert pick_judge([predicate], lens, output=True) is predicate
    assert pick_judge([predicate], lens).name == NoJudge.name  # detection cannot run it
    assert reads_output(OutputScorer(steered[0], lambda feature: MAX_ACT))
    assert not reads_output(DetectionScorer())
