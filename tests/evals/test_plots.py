"""The report's plots, drawn with the real matplotlib from hand-made scores: the recall
curves by activation quantile (floors left out) and the reliability plot, each written
only when there is data for it, with the curves' numbers in report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest

from evals.core import Explained, Score
from evals.floors import floor_name
from evals.plots import mean_recall, recall_figure, reliability_figure
from evals.report import summarize, write_report
from evals.results import BenchConfig

PNG = b"\x89PNG"
FEATURES = [1, 2]
# explainer -> feature -> recall per quantile 0..9: the agent covers the weak end half
# the time, top tokens only the strongest; a floor recalls nothing.
RECALL = {
    "agent": {1: [0.0] * 5 + [1.0] * 5, 2: [1.0] * 10},
    "toptokens": {1: [0.0] * 8 + [1.0] * 2, 2: [0.0] * 9 + [1.0]},
    "agent~floor": {1: [0.0] * 10, 2: [0.0] * 10},
}


def config(scorers: list[str]) -> BenchConfig:
    return BenchConfig(
        run_id="plots", source="test", evidence_id="e", features=FEATURES,
        explainers=["agent", "toptokens"], scorers=scorers, judges=["predicate"],
        per_quantile=2, non_activating=10, seed=0,
    )  # fmt: skip


def detection(explainer: str, feature: int) -> Score:
    recall = RECALL[explainer][feature]
    details: dict[str, Any] = {"recall_by_quantile": {str(q): r for q, r in enumerate(recall)}}
    if explainer == "agent":  # scored against hard negatives too: a false positive rate
        hard = {"tokens": 0.8}
        details |= {"hard_negative_accuracy": 0.6, "hard_specificity": hard}
        details["random_specificity"] = 0.9
    return Score(
        feature=feature, explainer=explainer, scorer="detection", judge="predicate",
        score=0.5 + sum(recall) / 40, details=details,
    )  # fmt: skip


def simulation(explainer: str, feature: int) -> Score:
    return Score(
        feature=feature, explainer=explainer, scorer="simulation", judge="predicate", score=0.4
    )


def explanations(confident: bool) -> dict[tuple[str, int], Explained]:
    stated = {1: 0.9, 2: 0.35} if confident else {}
    return {
        (e, f): Explained(
            feature=f, explainer=e, text="x", confidence=stated.get(f) if e == "agent" else None
        )
        for e in ("agent", "toptokens")
        for f in FEATURES
    }


def test_the_report_draws_recall_curves_without_floors_and_a_reliability_plot(
    tmp_path: Path,
) -> None:
    cfg = config(["detection", "simulation"])
    scores = [
        make(e, f)
        for make in (detection, simulation)
        for e in (*cfg.explainers, floor_name("agent"))
        for f in FEATURES
    ]
    summary = summarize(cfg, scores, explanations(confident=True), {})
    curves = summary.recall_by_quantile
    assert set(curves) == {"agent", "toptokens"}  # the floor is not an explainer's curve
    assert curves["agent"]["0"] == pytest.approx(0.5) and curves["agent"]["9"] == 1.0
    assert curves["toptokens"]["8"] == pytest.approx(0.5)
    assert mean_recall(scores, ["agent", "agent~floor"]) == {"agent": curves["agent"]}

    figure = recall_figure(summary)
    assert figure is not None
    assert figure.axes[0].get_legend_handles_labels()[1] == ["agent", "toptokens"]
    # Two curves and the agent's false positive rate on random negatives, dotted.
    lines = figure.axes[0].get_lines()
    assert len(lines) == 3 and lines[1].get_linestyle() == ":"
    assert list(lines[1].get_ydata()) == pytest.approx([0.1, 0.1])
    reliability = reliability_figure(summary)  # one panel per scorer the agent stated for
    assert reliability is not None
    assert [a.get_title() for a in reliability.axes] == ["detection", "simulation"]
    plt.close(figure)
    plt.close(reliability)

    report = write_report(tmp_path, cfg, scores, explanations(confident=True), {}, {})
    for name in ("scores.png", "density.png", "recall_curves.png", "reliability.png"):
        assert (tmp_path / name).read_bytes()[:4] == PNG, name
    text = report.read_text()
    assert "![recall_curves](recall_curves.png)" in text
    assert "![reliability](reliability.png)" in text
    assert "## Detection recall by activation quantile" in text
    assert "| agent | 0.500 | 0.500 | 0.500 | 0.500 | 0.500 | 1.000 |" in text
    table = text.split("## Detection recall by activation quantile")[1].split("\n## ")[0]
    assert "| toptokens | 0.000 |" in table and "~floor" not in table


def test_no_recall_curves_without_detection_and_no_reliability_without_confidence(
    tmp_path: Path,
) -> None:
    cfg = config(["simulation"])
    scores = [simulation(e, f) for e in cfg.explainers for f in FEATURES]
    summary = summarize(cfg, scores, explanations(confident=False), {})
    assert summary.recall_by_quantile == {} and summary.calibration == {}
    report = write_report(tmp_path, cfg, scores, explanations(confident=False), {}, {})
    assert not (tmp_path / "recall_curves.png").exists()
    assert not (tmp_path / "reliability.png").exists()
    assert (tmp_path / "scores.png").read_bytes()[:4] == PNG
    assert "recall_curves" not in report.read_text()
    assert "by activation quantile" not in report.read_text()
