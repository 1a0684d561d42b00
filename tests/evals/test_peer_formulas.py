"""Our metrics against the peers' published definitions: the same inputs through a
reference written here from each peer's definition (source cited on each) and through
our code, driven the way the product drives it (a scorer on a `ScoringSet`, with a judge
that returns given probabilities), agree to 1e-9.

Peers (the commits read):
- delphi, EleutherAI/delphi @ 3c2e139: detection and fuzzing metrics, AUC, the 0/1
  probability from log-probabilities, pooled simulation correlation.
- OpenAI automated-interpretability @ e4aa21b (Bills et al. 2023): correlation scoring
  "all at once", the expected value over the 0-10 digit log-probabilities.
- SAGE, jiujiubuhejiu/SAGE @ add7ed7 (Han et al. 2025): tau, generative success, the
  expected value it uses for prediction.

Where we differ on purpose, the shared quantity is compared and the difference said:
- Undefined cases. delphi scores a set with one class anyway (the missing class's rate
  counts as 0, so "all activating, all said yes" gets accuracy 0.5); OpenAI's
  correlation is NaN for constant predictions. We refuse the one-class set (an error,
  no number) and score constant predictions 0.0 (a NaN would drop the feature from a
  mean and flatter the explainer).
- Yes/no answers. delphi counts the judge's written 0/1 answer and uses the
  log-probability only for the AUC; we count "probability >= 0.5", the same answer at
  temperature 0 up to exact ties, and give an AUC only when the probabilities are graded
  (delphi: only when log-probabilities were asked for). delphi drops examples whose
  reply did not parse; our judge answers for every example or the scoring fails.
- Digit tokens. OpenAI counts only the exact tokens "0".."10", SAGE strips whitespace but
  keeps one of " 3" and "3", delphi counts any alternative *containing* a "0" or "1"
  ("10" counts as 0). We count every alternative whose stripped text is the digit, summed:
  on alternatives with one spelling per value, all agree (tested); otherwise ours is the
  probability of the value whatever the tokenizer's whitespace.
- Fuzzing samples. delphi highlights tokens >= 0.3 x the example's max as correct and
  ceil(mean active tokens per example) quiet ones as wrong; we highlight every active
  token as correct and, per example, as many quiet ones as wrong. On examples whose
  active tokens all reach 0.3 x max the correct highlightings are the same (tested).
- Embedding. delphi prefixes the explanation with a retrieval instruction, meant for an
  instruction-tuned embedder (the caller picks the model); all-MiniLM-L6-v2 is not one,
  so we embed the explanation bare.
- Generative. SAGE divides successes by the texts the judge wrote; we divide by the
  texts asked for, so a judge that writes fewer is not flattered (same when it writes N).
- Predictive. As SAGE's public code does, per-token predictions against per-token
  activations, pooled over the held-out activating exemplars (SAGE also rescales the
  truth to 0-10 by its maximum, which leaves Pearson's r unchanged).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import Sequence
from typing import cast

import numpy as np
import pytest

from evals.core import (
    Explained,
    Highlighted,
    Judge,
    JudgeUnavailable,
    Score,
    Scorer,
    ScoringSet,
)
from evals.judges.llm_replies import binary_probability, expected_value, simulation_values
from evals.metrics import pooled_pearson, precision_recall_f1, roc_auc
from evals.scorers import (
    DetectionScorer,
    EmbeddingScorer,
    FuzzingScorer,
    GenerativeScorer,
    PredictiveScorer,
    SimulationScorer,
)
from evals.scorers.fuzzing import highlighted
from llm_client import TextWithLogprobs, TokenLogprobs
from probes.evidence.store import Example, FeatureEvidence, FeatureStatistics
from probes.evidence.threshold import firing_threshold
from probes.probe_runner import ProbeResult, ProbeRunner

TOL = 1e-9
SEEDS = [0, 1, 2]
SIZES = [(1, 1), (3, 7), (20, 20), (41, 9)]  # (activating, non-activating)
EXPLAINED = Explained(feature=7, explainer="test", text="mentions of rivers and lakes")
DIGITS = [str(v) for v in range(11)]


# --------------------------------------------------------------------------------------
# References, each written from the peer's published definition.


def delphi_metrics(predicted: Sequence[bool], activating: Sequence[bool]) -> dict[str, float]:
    """delphi, delphi/log/result_analysis.py, `compute_confusion` and
    `compute_classification_metrics`: counts of "said fires" against "fires"; its
    `accuracy` is the class-balanced one, (TP/P + TN/N) / 2, a missing class's rate
    taken as 0; precision 0 without predicted positives; F1 0 when P + R = 0."""
    pairs = list(zip(predicted, activating, strict=True))
    pos = sum(1 for _, a in pairs if a)
    neg = len(pairs) - pos
    tp = sum(1 for p, a in pairs if p and a)
    tn = sum(1 for p, a in pairs if not p and not a)
    fp = sum(1 for p, a in pairs if p and not a)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / pos if pos else 0.0
    return {
        "accuracy": ((tp / pos if pos else 0.0) + (tn / neg if neg else 0.0)) / 2,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }


def roc_area(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """delphi, delphi/log/result_analysis.py, `compute_auc` (scikit-learn's
    `roc_auc_score` of "activating" against the probability; for embedding, Paulo et al.
    report the same AUROC on the per-example similarities that
    delphi/scorers/embedding/embedding.py, `EmbeddingScorer._query`, records): the ROC
    curve's points at every distinct score taken as the cut, joined by straight lines
    (ties move both rates at once), and the area under them by trapezoids."""
    n_pos = sum(positive)
    n_neg = len(positive) - n_pos
    points = [(0.0, 0.0)]
    for cut in sorted(set(scores), reverse=True):
        tp = sum(1 for s, y in zip(scores, positive, strict=True) if y and s >= cut)
        fp = sum(1 for s, y in zip(scores, positive, strict=True) if not y and s >= cut)
        points.append((fp / n_neg, tp / n_pos))
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(points))


def correlation(real: Sequence[float], predicted: Sequence[float]) -> float:
    """OpenAI automated-interpretability,
    neuron-explainer/neuron_explainer/explanations/scoring.py, `correlation_score`
    (delphi, delphi/scorers/simulator/simulation/scoring.py, `_calculate_correlation`):
    Pearson's r of the two lists, NaN when either is constant (as numpy gives)."""
    if len(set(real)) == 1 or len(set(predicted)) == 1:
        return math.nan
    n = len(real)
    mr, mp = math.fsum(real) / n, math.fsum(predicted) / n
    cov = math.fsum((a - mr) * (b - mp) for a, b in zip(real, predicted, strict=True))
    var_r = math.fsum((a - mr) ** 2 for a in real)
    var_p = math.fsum((b - mp) ** 2 for b in predicted)
    return cov / math.sqrt(var_r * var_p)


def all_at_once(real: Sequence[Sequence[float]], predicted: Sequence[Sequence[float]]) -> float:
    """OpenAI, scoring.py, `aggregate_scored_sequence_simulations`: the EV correlation
    over every token of every sequence at once, not a mean of per-sequence ones; delphi,
    simulation/scoring.py, `_aggregate_group`, the same over its overall group (quantile
    -1: activating and non-activating sequences together)."""
    return correlation([x for row in real for x in row], [x for row in predicted for x in row])


def openai_expected_value(top: dict[str, float]) -> float:
    """OpenAI, neuron-explainer/neuron_explainer/explanations/simulator.py,
    `parse_top_logprobs` + `compute_predicted_activation_stats_for_token`: of the top
    alternatives, those that are exactly "0".."10", their probabilities renormalized to
    sum to 1, and the mean value under them."""
    probs = {int(t): math.exp(lp) for t, lp in top.items() if t in DIGITS}
    total = sum(probs.values())
    return sum(v * p / total for v, p in probs.items())


def sage_expected_value(top: dict[str, float]) -> float:
    """SAGE, scripts/evaluate.py, `get_activation_logprobs` + `compute_expected_activation`:
    alternatives whose stripped text is an integer 0-10 (one probability per value),
    renormalized; 0.0 when there are none."""
    probs: dict[int, float] = {}
    for token, lp in top.items():
        text = token.strip()
        if text.isdigit() and 0 <= int(text) <= 10:
            probs[int(text)] = math.exp(lp)
    total = sum(probs.values())
    return sum(v * p / total for v, p in probs.items()) if probs else 0.0


def delphi_binary_probability(answers: Sequence[TokenLogprobs]) -> list[float]:
    """delphi, delphi/scorers/classifier/classifier.py, `Classifier._parse_logprobs`: at
    each answer token containing a "0" or "1", P(1) / (P(0) + P(1)) over its top
    alternatives (one containing "0" adds to P(0), else one containing "1" to P(1))."""
    out = []
    for answer in answers:
        if "0" in answer.token or "1" in answer.token:
            p0 = sum(math.exp(lp) for t, lp in answer.top.items() if "0" in t)
            p1 = sum(math.exp(lp) for t, lp in answer.top.items() if "0" not in t and "1" in t)
            out.append(p1 / (p0 + p1) if p0 + p1 > 0 else 0.0)
    return out


def sage_tau(top_maxima: Sequence[float]) -> float:
    """SAGE, scripts/evaluate.py, `process_single_feature` (its "dynamic activation
    threshold"): the exemplars sorted by activation, the first 10, their mean max
    activation halved."""
    top = sorted(top_maxima, reverse=True)[:10]
    return sum(top) / len(top) / 2


def sage_success_rate(maxima: Sequence[float], tau: float) -> float:
    """SAGE, scripts/evaluate.py, `evaluate_examples`: a generated text succeeds when
    its max activation is >= the threshold; rate = successes / texts evaluated."""
    return sum(m >= tau for m in maxima) / len(maxima)


# --------------------------------------------------------------------------------------
# Inputs and a judge that answers what it is given.


def example(context: int, tokens: Sequence[str], acts: Sequence[float]) -> Example:
    return Example(
        context=context,
        text_index=context,
        start=0,
        token_ids=list(range(len(tokens))),
        tokens=list(tokens),
        acts=list(acts),
        max_act=max(acts, default=0.0),
    )


def random_example(rng: random.Random, context: int, active: bool) -> Example:
    """An example of 4-12 tokens; when `active`, 1-3 tokens fire with values in
    [0.3, 1] x its peak (so delphi's 0.3 x max rule marks the same tokens as > 0)."""
    n = rng.randint(4, 12)
    tokens = [f" w{context}_{i}" for i in range(n)]
    acts = [0.0] * n
    if active:
        peak = rng.uniform(0.5, 8.0)
        for i in rng.sample(range(n), rng.randint(1, min(3, n - 1))):
            acts[i] = rng.uniform(0.3, 1.0) * peak
    return example(context, tokens, acts)


def scoring_set(rng: random.Random, n_act: int, n_non: int, threshold: float = 1.0) -> ScoringSet:
    activating = [random_example(rng, i, True) for i in range(n_act)]
    non_activating = [random_example(rng, n_act + i, False) for i in range(n_non)]
    return ScoringSet(
        feature=EXPLAINED.feature,
        evidence_id="peer-formulas",
        threshold=threshold,
        activating=activating,
        quantile_of=[i % 10 for i in range(n_act)],
        non_activating=non_activating,
    )


def probability(rng: random.Random, style: str) -> float:
    """A judge's probability: graded, graded with ties (one decimal), or yes/no."""
    p = rng.random()
    return {"graded": p, "ties": round(p, 1), "yes-no": float(p >= 0.5)}[style]


class GivenJudge:
    """Answers from given tables, keyed by the example (shuffling cannot misalign them);
    fuzzing probabilities are drawn the first time an item is seen, and kept."""

    name = "given"

    def __init__(
        self,
        detect: dict[int, float] | None = None,
        simulate: dict[int, list[float]] | None = None,
        texts: list[str] | None = None,
        fuzz_style: str = "graded",
        seed: int = 0,
    ) -> None:
        self.detected = detect or {}
        self.simulated = simulate or {}
        self.texts = texts or []
        self.fuzzed: dict[tuple[int, tuple[bool, ...]], float] = {}
        self.fuzz_style = fuzz_style
        self.rng = random.Random(seed)

    def can_judge(self, explained: Explained | None) -> bool:
        return explained is not None

    async def detect(self, explained: Explained, examples: Sequence[Example]) -> list[float]:
        return [self.detected[e.context] for e in examples]

    async def fuzz(self, explained: Explained, items: Sequence[Highlighted]) -> list[float]:
        out = []
        for item in items:
            key = (item.example.context, tuple(item.marked))
            if key not in self.fuzzed:
                self.fuzzed[key] = probability(self.rng, self.fuzz_style)
            out.append(self.fuzzed[key])
        return out

    async def simulate(
        self, explained: Explained, examples: Sequence[Example]
    ) -> list[list[float]]:
        return [self.simulated[e.context] for e in examples]

    async def generate(self, explained: Explained, n: int) -> list[str]:
        return self.texts

    async def intruder(
        self, explained: Explained | None, rounds: Sequence[Sequence[Highlighted]]
    ) -> list[list[float]]:
        raise JudgeUnavailable("no intruder answers given")

    async def pick_steered(
        self, explained: Explained, prompts: Sequence[str], options: Sequence[Sequence[str]]
    ) -> list[float]:
        raise JudgeUnavailable("no intruder answers given")


def run(scorer: Scorer, examples: ScoringSet, judge: Judge) -> Score:
    return asyncio.run(scorer.score(EXPLAINED, examples, judge))


def assert_auc(score: Score, probs: Sequence[float], truth: Sequence[bool]) -> None:
    """delphi's AUC when the answers are graded (delphi: when log-probabilities were
    asked for); none for plain yes/no answers."""
    if all(p in (0.0, 1.0) for p in probs):
        assert score.details["auc"] is None
    else:
        assert abs(score.details["auc"] - roc_area(probs, truth)) <= TOL


def scored(score: Score) -> float:
    assert score.error is None and score.score is not None, score
    return score.score


# --------------------------------------------------------------------------------------
# Detection (delphi): the judge's probability per example, activating or not.


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n_act", "n_non"), SIZES)
@pytest.mark.parametrize("style", ["graded", "ties", "yes-no"])
def test_detection_matches_delphi(seed: int, n_act: int, n_non: int, style: str) -> None:
    rng = random.Random(f"{seed}:{n_act}:{n_non}:{style}")
    examples = scoring_set(rng, n_act, n_non)
    probs = {e.context: probability(rng, style) for e in examples.examples}
    score = run(DetectionScorer(seed=seed), examples, GivenJudge(detect=probs))

    p = [probs[e.context] for e in examples.examples]
    fires = [True] * n_act + [False] * n_non
    ref = delphi_metrics([x >= 0.5 for x in p], fires)
    assert abs(scored(score) - ref["accuracy"]) <= TOL
    assert abs(score.details["f1"] - ref["f1"]) <= TOL
    assert_auc(score, p, fires)


@pytest.mark.parametrize("constant", [0.0, 0.3, 0.5, 0.99, 1.0])
def test_detection_constant_answers_match_delphi(constant: float) -> None:
    """The same probability everywhere: balanced accuracy 0.5 in both, whatever the
    balance; AUC 0.5 when graded (one ROC step from (0, 0) to (1, 1))."""
    examples = scoring_set(random.Random(5), 12, 30)
    probs = {e.context: constant for e in examples.examples}
    score = run(DetectionScorer(), examples, GivenJudge(detect=probs))
    fires = [True] * 12 + [False] * 30
    ref = delphi_metrics([constant >= 0.5] * 42, fires)
    assert scored(score) == ref["accuracy"] == 0.5
    assert abs(score.details["f1"] - ref["f1"]) <= TOL
    if constant in (0.0, 1.0):
        assert score.details["auc"] is None
    else:
        assert score.details["auc"] == roc_area([constant] * 42, fires) == 0.5


def test_one_class_sets_get_no_number_where_delphi_gives_one() -> None:
    """delphi would score a set with no non-activating examples: a judge saying yes to
    all gets accuracy (1 + 0) / 2 = 0.5, recall 1, F1 1. Such a set cannot tell a good
    explanation from "everything fires", so we report an error instead."""
    rng = random.Random(9)
    examples = scoring_set(rng, 8, 0)
    score = run(DetectionScorer(), examples, GivenJudge(detect=dict.fromkeys(range(8), 1.0)))
    assert score.score is None and score.error is not None and "both" in score.error
    assert delphi_metrics([True] * 8, [True] * 8) == {
        "accuracy": 0.5,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
    }
    with pytest.raises(ValueError, match="undefined"):
        roc_auc([0.2, 0.9], [True, True])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [2, 5, 40, 301])
def test_metric_functions_match_delphi(seed: int, n: int) -> None:
    """The metric functions alone, on inputs of every size, with and without ties."""
    rng = np.random.default_rng([seed, n])
    fires = rng.random(n) < rng.uniform(0.1, 0.9)
    fires[0], fires[-1] = True, False  # both classes
    scores = rng.random(n)
    for values in (scores, np.round(scores, 1), np.round(scores * 3)):
        said = (values >= 0.5).tolist()
        truth = fires.tolist()
        ref = delphi_metrics(said, truth)
        precision, recall, f1 = precision_recall_f1(said, truth)
        assert abs(precision - ref["precision"]) <= TOL
        assert abs(recall - ref["recall"]) <= TOL
        assert abs(f1 - ref["f1"]) <= TOL
        assert abs(roc_auc(values.tolist(), truth) - roc_area(values.tolist(), truth)) <= TOL


# --------------------------------------------------------------------------------------
# Fuzzing (delphi): correct and wrong highlightings of activating examples.


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_act", [1, 4, 30])
@pytest.mark.parametrize("style", ["graded", "ties", "yes-no"])
def test_fuzzing_matches_delphi(seed: int, n_act: int, style: str) -> None:
    rng = random.Random(f"fuzz:{seed}:{n_act}")
    examples = scoring_set(rng, n_act, 3)
    judge = GivenJudge(fuzz_style=style, seed=seed)
    score = run(FuzzingScorer(seed=seed), examples, judge)

    keys = list(judge.fuzzed)
    by_context = {e.context: e for e in examples.activating}
    correct = [list(marked) == [a > 0 for a in by_context[c].acts] for c, marked in keys]
    p = [judge.fuzzed[k] for k in keys]
    ref = delphi_metrics([x >= 0.5 for x in p], correct)
    assert abs(scored(score) - ref["accuracy"]) <= TOL
    assert abs(score.details["f1"] - ref["f1"]) <= TOL
    assert score.details["n_correct"] == sum(correct) == n_act
    assert_auc(score, p, correct)


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzzing_highlights_as_delphi_does(seed: int) -> None:
    """delphi (delphi/scorers/classifier/sample.py, `_prepare_text`): a correct
    highlighting marks the tokens at >= 0.3 x the example's max, a wrong one only tokens
    at <= 0.3 x max. On examples whose firing tokens all reach 0.3 x max, ours marks the
    same correct tokens, and its wrong ones are all quiet."""
    rng = random.Random(f"highlight:{seed}")
    activating = [random_example(rng, i, True) for i in range(25)]
    items, correct = highlighted(activating, f"{seed}")
    assert sum(correct) == len(activating)
    for item, is_correct in zip(items, correct, strict=True):
        cut = 0.3 * item.example.max_act
        if is_correct:
            assert item.marked == [a >= cut for a in item.example.acts]
        else:
            assert any(item.marked)
            assert all(a <= cut for a, m in zip(item.example.acts, item.marked, strict=True) if m)


# --------------------------------------------------------------------------------------
# Simulation (OpenAI, delphi): pooled correlation of predicted and true activations.


def simulated_rows(rng: random.Random, examples: ScoringSet, style: str) -> dict[int, list[float]]:
    """Per example, a simulator's 0-10 predictions: expected values (floats), written
    digits (integers, many ties), or one constant."""
    rows: dict[int, list[float]] = {}
    for e in examples.examples:
        if style == "ev":
            rows[e.context] = [min(10.0, a + rng.uniform(0, 4)) for a in e.acts]
        elif style == "digits":
            rows[e.context] = [float(rng.choice([0, 0, 0, 1, 5, 10])) for _ in e.acts]
        else:
            rows[e.context] = [3.0 for _ in e.acts]
    return rows


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n_act", "n_non"), SIZES)
@pytest.mark.parametrize("style", ["ev", "digits"])
def test_simulation_matches_openai_all_at_once(
    seed: int, n_act: int, n_non: int, style: str
) -> None:
    rng = random.Random(f"sim:{seed}:{n_act}:{n_non}")
    examples = scoring_set(rng, n_act, n_non)
    rows = simulated_rows(rng, examples, style)
    score = run(SimulationScorer(), examples, GivenJudge(simulate=rows))
    real = [e.acts for e in examples.examples]
    predicted = [rows[e.context] for e in examples.examples]
    ref = all_at_once(real, predicted)
    if math.isnan(ref):  # written digits may all be 0 on a tiny set
        assert scored(score) == 0.0
    else:
        assert abs(scored(score) - ref) <= TOL
    assert score.details["n_tokens"] == sum(len(r) for r in real)


def test_simulation_pools_tokens_rather_than_averaging_sequences() -> None:
    """Bills et al.'s all-at-once score is not the mean of per-sequence correlations:
    here every sequence is ranked perfectly inside itself, but the scale is wrong across
    sequences."""
    real = [[0.0, 1.0], [0.0, 9.0], [0.0, 4.0]]
    predicted = [[0.0, 9.0], [0.0, 1.0], [0.0, 4.0]]
    per_sequence = [correlation(r, p) for r, p in zip(real, predicted, strict=True)]
    assert per_sequence == [1.0, 1.0, 1.0]
    assert abs(pooled_pearson(predicted, real) - all_at_once(real, predicted)) <= TOL
    assert pooled_pearson(predicted, real) < 0.6


def test_constant_simulation_scores_zero_where_openai_gives_nan() -> None:
    examples = scoring_set(random.Random(3), 10, 10)
    rows = simulated_rows(random.Random(3), examples, "constant")
    score = run(SimulationScorer(), examples, GivenJudge(simulate=rows))
    real = [e.acts for e in examples.examples]
    assert math.isnan(all_at_once(real, [rows[e.context] for e in examples.examples]))
    assert scored(score) == 0.0
    quiet = scoring_set(random.Random(3), 0, 5)  # true activations constant: no number
    failed = run(
        SimulationScorer(),
        quiet,
        GivenJudge(simulate=simulated_rows(random.Random(3), quiet, "ev")),
    )
    assert failed.score is None and failed.error is not None


# --------------------------------------------------------------------------------------
# Expected value over digit log-probabilities (OpenAI's simulator, SAGE's prediction).


def digit_alternatives(rng: random.Random, chosen: str) -> dict[str, float]:
    """Top alternatives at a digit position: `chosen` and some other values, one
    spelling each, and a few non-digit tokens; log-probabilities of a distribution."""
    values = {chosen, *rng.sample(DIGITS, rng.randint(0, 6))}
    others = rng.sample(["a", "\n", "The", "-", "x"], rng.randint(0, 3))
    weights = {t: rng.random() + 0.01 for t in [*values, *others]}
    total = sum(weights.values()) * rng.uniform(1.0, 1.5)  # some mass outside the top
    return {t: math.log(w / total) for t, w in weights.items()}


@pytest.mark.parametrize("seed", range(20))
def test_expected_value_matches_openai_and_sage(seed: int) -> None:
    rng = random.Random(seed)
    chosen = rng.choice(DIGITS)
    top = digit_alternatives(rng, chosen)
    ours = expected_value(TokenLogprobs(chosen, top[chosen], top))
    assert ours is not None
    assert abs(ours - openai_expected_value(top)) <= TOL
    assert abs(ours - sage_expected_value(top)) <= TOL


def test_expected_value_counts_leading_spaces_as_sage_does_not_as_openai() -> None:
    """A tokenizer that writes " 7": OpenAI's exact match would ignore that mass; SAGE
    and we count it."""
    top = {" 7": math.log(0.6), "2": math.log(0.3), "x": math.log(0.1)}
    ours = expected_value(TokenLogprobs(" 7", top[" 7"], top))
    assert ours is not None
    assert abs(ours - sage_expected_value(top)) <= TOL
    assert abs(ours - (7 * 0.6 + 2 * 0.3) / 0.9) <= TOL
    assert openai_expected_value(top) == 2.0


@pytest.mark.parametrize("seed", SEEDS)
def test_simulation_reply_gives_openai_expected_values(seed: int) -> None:
    """A whole "index<TAB>token<TAB>value" reply, as the LLM judge reads it: every
    token's activation is OpenAI's expected value at its value's position."""
    rng = random.Random(f"reply:{seed}")
    n = rng.randint(1, 15)
    tokens: list[TokenLogprobs] = []
    tops: list[dict[str, float]] = []
    for i in range(n):
        chosen = rng.choice(DIGITS)
        top = digit_alternatives(rng, chosen)
        tops.append(top)
        for text in (str(i), "\t", f"w{i}", "\t"):
            tokens.append(TokenLogprobs(text, -0.01, {text: -0.01}))
        tokens += [TokenLogprobs(chosen, top[chosen], top), TokenLogprobs("\n", -0.01, {})]
    reply = TextWithLogprobs(text="".join(t.token for t in tokens), tokens=tokens)
    values = simulation_values(reply, n)
    assert values is not None
    for got, top in zip(values, tops, strict=True):
        assert abs(got - openai_expected_value(top)) <= TOL


@pytest.mark.parametrize("seed", range(10))
def test_binary_probability_matches_delphi(seed: int) -> None:
    rng = random.Random(seed)
    chosen = rng.choice(["0", "1", " 0", " 1"])
    spellings = [chosen, *rng.sample(["0", "1", " 0", " 1", "yes", "no", "The"], 3)]
    weights = {t: rng.random() + 0.01 for t in spellings}
    top = {t: math.log(w / 2) for t, w in weights.items()}
    answer = TokenLogprobs(chosen, top[chosen], top)
    reply = [TokenLogprobs("Answer", -0.1, {}), TokenLogprobs(":", -0.1, {}), answer]
    ours = binary_probability(reply)
    assert ours is not None
    assert abs(ours - delphi_binary_probability(reply)[0]) <= TOL


# --------------------------------------------------------------------------------------
# Embedding (delphi): AUROC of explanation-example cosine similarity.


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n_act", "n_non"), SIZES)
def test_embedding_matches_delphi_auroc(seed: int, n_act: int, n_non: int) -> None:
    rng = random.Random(f"embed:{seed}:{n_act}:{n_non}")
    examples = scoring_set(rng, n_act, n_non)
    if n_act > 1 and n_non > 1:  # a tie: the same text activating and not
        twin = examples.activating[0]
        examples.non_activating[0] = example(999, twin.tokens, [0.0] * len(twin.tokens))
    vectors = np.random.default_rng([seed, n_act, n_non]).normal(size=(200, 8))
    raw: dict[str, np.ndarray] = {}

    def vector(text: str) -> np.ndarray:
        return raw.setdefault(text, vectors[len(raw)] * (1 + len(raw) % 3))  # not unit norm

    def embed(texts: Sequence[str]) -> np.ndarray:  # the Embed contract: unit-norm rows
        rows = np.array([vector(t) for t in texts])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    score = run(EmbeddingScorer(embed=embed), examples, GivenJudge())
    query = vector(EXPLAINED.text)
    cosines = [
        float(vector(e.text) @ query / (np.linalg.norm(vector(e.text)) * np.linalg.norm(query)))
        for e in examples.examples
    ]
    ref = roc_area(cosines, [True] * n_act + [False] * n_non)
    assert abs(scored(score) - ref) <= TOL


# --------------------------------------------------------------------------------------
# Generative and predictive accuracy (SAGE).


def evidence(top_maxima: Sequence[float]) -> FeatureEvidence:
    stats = FeatureStatistics(
        fired_tokens=0,
        tokens=0,
        density=0.0,
        mean_act=None,
        max_act=0.0,
        hist_counts=[],
        hist_edges=[],
    )
    top = [example(i, [" t"], [m]) for i, m in enumerate(sorted(top_maxima, reverse=True))]
    return FeatureEvidence(
        feature=EXPLAINED.feature,
        evidence_id="peer-formulas",
        stats=stats,
        top=top,
        quantiles=[],
        non_activating=[],
        promoted=None,
        suppressed=None,
        similar=None,
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_top", [1, 5, 10, 25])
def test_tau_matches_sage(seed: int, n_top: int) -> None:
    rng = random.Random(f"tau:{seed}:{n_top}")
    maxima = [rng.uniform(0.1, 20) for _ in range(n_top)]
    assert abs(firing_threshold(evidence(maxima)) - sage_tau(maxima)) <= TOL


class FakeRunner:
    """Runs a text by looking up its activations."""

    def __init__(self, acts: dict[str, list[float]]) -> None:
        self.acts = acts

    async def run(self, texts: Sequence[str], feature: int) -> list[ProbeResult]:
        return [ProbeResult(t, tuple(t.split()), tuple(self.acts[t])) for t in texts]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [1, 4, 10])
def test_generative_matches_sage(seed: int, n: int) -> None:
    rng = random.Random(f"gen:{seed}:{n}")
    top = [rng.uniform(1, 10) for _ in range(12)]
    tau = sage_tau(top)
    texts = [f"text {i}" for i in range(n)]
    acts = {t: [rng.uniform(0, 2 * tau) * rng.random() for _ in range(5)] for t in texts}
    acts[texts[0]][2] = tau  # exactly tau counts as a success in both
    examples = scoring_set(rng, 2, 2, threshold=firing_threshold(evidence(top)))
    runner = cast(ProbeRunner, FakeRunner(acts))
    score = run(GenerativeScorer(runner, n=n), examples, GivenJudge(texts=texts))
    ref = sage_success_rate([max(acts[t]) for t in texts], tau)
    assert abs(scored(score) - ref) <= TOL
    assert score.details["successes"] >= 1


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n_act", "n_non"), SIZES[1:])
def test_predictive_pools_tokens_of_activating_exemplars(seed: int, n_act: int, n_non: int) -> None:
    """SAGE, scripts/evaluate.py, `evaluate_prediction_ability`: scipy's `pearsonr` of
    every token's predicted against its true activation, pooled over the held-out
    exemplars (activating ones only: the quiet contexts are not read)."""
    rng = random.Random(f"pred:{seed}:{n_act}:{n_non}")
    examples = scoring_set(rng, n_act, n_non)
    rows = simulated_rows(rng, examples, "ev")
    score = run(PredictiveScorer(), examples, GivenJudge(simulate=rows))
    ref = correlation(
        [a * 10 / examples.max_act for e in examples.activating for a in e.acts],
        [p for e in examples.activating for p in rows[e.context]],
    )
    assert abs(scored(score) - ref) <= TOL
