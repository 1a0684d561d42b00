"""Expected calibration error and its reliability bins, against hand-computed values,
and the report's calibration table."""

from __future__ import annotations

import pytest

from evals.calibration import calibration
from evals.core import Explained, Score
from evals.report import markdown, summarize
from evals.results import BenchConfig


def test_calibrated_and_overconfident_explainers() -> None:
    assert calibration([]) is None
    calibrated = calibration([(0.25, 0.25), (0.25, 0.25), (0.85, 0.85)])
    assert calibrated is not None and calibrated.ece == pytest.approx(0.0)
    # Says 0.9 and scores 0.6 on two features; says 0.3 and scores 0.4 on one.
    found = calibration([(0.9, 0.5), (0.9, 0.7), (0.3, 0.4)])
    assert found is not None and found.n == 3
    assert found.ece == pytest.approx((2 * 0.3 + 1 * 0.1) / 3)
    assert [(b.lo, b.n) for b in found.bins] == [(pytest.approx(0.3), 1), (pytest.approx(0.9), 2)]
    assert found.bins[1].confidence == pytest.approx(0.9) and found.bins[1].score == pytest.approx(
        0.6
    )
    # Confidence 1.0 falls in the top bin, not past it.
    top = calibration([(1.0, 1.0)])
    assert top is not None and top.bins[0].hi == pytest.approx(1.0)


def test_the_report_sets_stated_confidence_against_held_out_scores() -> None:
    config = BenchConfig(
        run_id="calibration", source="test", evidence_id="e", features=[1, 2, 3],
        explainers=["agent", "toptokens"], scorers=["detection"], judges=["predicate"],
        per_quantile=2, non_activating=20, seed=0,
    )  # fmt: skip
    stated = {1: 0.9, 2: 0.9, 3: 0.3}
    held_out = {1: 0.5, 2: 0.7, 3: 0.4}
    explanations = {
        (e, f): Explained(
            feature=f, explainer=e, text="x", confidence=stated[f] if e == "agent" else None
        )
        for e in config.explainers
        for f in config.features
    }
    scores = [
        Score(feature=f, explainer=e, scorer="detection", judge="predicate", score=held_out[f])
        for e in config.explainers
        for f in config.features
    ]
    summary = summarize(config, scores, explanations, {})
    assert set(summary.calibration) == {"agent"}  # top tokens states no confidence
    found = summary.calibration["agent"]["detection"]
    assert found.ece == pytest.approx((2 * 0.3 + 1 * 0.1) / 3)
    text = markdown(config, summary)
    assert "## Calibration" in text and f"| agent | detection | 3 | {found.ece:.3f} |" in text
