"""The benchmark report's plots, as PNG files: score distributions per explainer
(scores.png), score against firing density (density.png), detection recall by
activation quantile per explainer (recall_curves.png, as delphi plots them: Paulo et
al. 2024, "Automatically Interpreting Millions of Features in Large Language Models")
and stated confidence against held-out score (reliability.png, the reliability diagram
of Guo et al. 2017). Floors are left out of the curves: they are a baseline of the
scores, not an explainer. matplotlib is imported only when a plot is drawn."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evals.core import Score
from evals.floors import is_floor

if TYPE_CHECKING:  # report imports this module; the summary is only a type here
    from evals.report import Summary

DPI = 110


def mean_recall(scores: Sequence[Score], explainers: Sequence[str]) -> dict[str, dict[str, float]]:
    """explainer -> activation quantile ("0" weakest) -> detection recall, the mean over
    the features it was scored on; explainers without such scores and floors left out."""
    hits: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in scores:
        by_quantile = s.details.get("recall_by_quantile")
        if s.scorer != "detection" or s.score is None or not by_quantile or is_floor(s.explainer):
            continue
        for q, recall in by_quantile.items():
            hits[s.explainer][int(q)].append(recall)
    return {
        e: {str(q): float(np.mean(hits[e][q])) for q in sorted(hits[e])}
        for e in explainers
        if e in hits
    }


def plot(
    summary: Summary, scores: Sequence[Score], densities: dict[int, float], out_dir: Path
) -> list[Path]:
    """Writes the plots into `out_dir`; the paths written (the recall curves and the
    reliability plot only when there is data for them)."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "scores.png": _scores_figure(summary, scores),
        "density.png": _density_figure(summary, scores, densities),
        "recall_curves.png": recall_figure(summary),
        "reliability.png": reliability_figure(summary),
    }
    paths = []
    for name, fig in figures.items():
        if fig is None:
            continue
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=DPI)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _values(scores: Sequence[Score]) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """(scorer, explainer) -> (feature, score) of what was scored."""
    values: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for s in scores:
        if s.score is not None:
            values[(s.scorer, s.explainer)].append((s.feature, s.score))
    return values


def _scores_figure(summary: Summary, scores: Sequence[Score]) -> Any:
    """Box plots of each explainer's scores, one panel per scorer."""
    values, explainers = _values(scores), summary.explainers
    fig, axes = _pyplot().subplots(
        1, len(summary.scorers), figsize=(3.2 * len(summary.scorers), 3.6), squeeze=False
    )
    for ax, scorer in zip(axes[0], summary.scorers, strict=True):
        data = [[v for _, v in values[(scorer, e)]] or [np.nan] for e in explainers]
        ax.boxplot(data, tick_labels=explainers)
        ax.set_title(scorer)
        ax.tick_params(axis="x", rotation=45)
    return fig


def _density_figure(summary: Summary, scores: Sequence[Score], densities: dict[int, float]) -> Any:
    """Each feature's score against its firing density (log scale), one panel per scorer."""
    values = _values(scores)
    fig, axes = _pyplot().subplots(
        1, len(summary.scorers), figsize=(3.2 * len(summary.scorers), 3.6), squeeze=False
    )
    for ax, scorer in zip(axes[0], summary.scorers, strict=True):
        for e in summary.explainers:
            points = [(densities[f], v) for f, v in values[(scorer, e)] if densities.get(f)]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.scatter(xs, ys, s=12, label=e, alpha=0.7)
        ax.set_xscale("log")
        ax.set_title(scorer)
        ax.set_xlabel("feature density")
    if axes[0][0].get_legend_handles_labels()[0]:  # no densities: nothing to name
        axes[0][0].legend(fontsize=7)
    return fig


def recall_figure(summary: Summary) -> Any | None:
    """One line per explainer: mean detection recall per activation quantile. Where the
    run had hard negatives, a dotted line of the same colour is the explainer's false
    positive rate on random negatives, the recall a judge gets by saying yes blindly.
    None without detection scores."""
    curves = summary.recall_by_quantile
    if not curves:
        return None
    fig, ax = _pyplot().subplots(figsize=(6.0, 3.8))
    dotted = False
    for e, recall in curves.items():
        quantiles = sorted(recall, key=int)
        (line,) = ax.plot(
            [int(q) for q in quantiles], [recall[q] for q in quantiles], marker="o", label=e
        )
        specificity = summary.hard.get(e, {}).get("random_specificity")
        if specificity is not None:
            ax.axhline(1 - specificity, color=line.get_color(), linestyle=":", linewidth=1)
            dotted = True
    ax.set_xlabel("activation quantile (0 = weakest)")
    ax.set_ylabel("detection recall (mean over features)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(range(10))
    ax.grid(alpha=0.3)
    title = "dotted: false positives on random negatives" if dotted else None
    ax.legend(fontsize=7, title=title, title_fontsize=7)
    ax.set_title("Detection recall by activation quantile")
    return fig


def reliability_figure(summary: Summary) -> Any | None:
    """One panel per calibrated scorer: each explainer's mean held-out score per stated
    confidence bin against the bin's mean confidence, against the diagonal (calibrated);
    marker area grows with the bin's features, and the count is written beside it. None
    when no explainer stated a confidence."""
    scorers = sorted({s for by_scorer in summary.calibration.values() for s in by_scorer})
    if not scorers:
        return None
    fig, axes = _pyplot().subplots(
        1, len(scorers), figsize=(3.8 * len(scorers), 3.8), squeeze=False
    )
    for ax, scorer in zip(axes[0], scorers, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
        for e, by_scorer in summary.calibration.items():
            found = by_scorer.get(scorer)
            if found is None:
                continue
            xs = [b.confidence for b in found.bins]
            ys = [b.score for b in found.bins]
            (line,) = ax.plot(xs, ys, alpha=0.6, label=f"{e} (ECE {found.ece:.3f})")
            sizes = [20 + 80 * b.n / found.n for b in found.bins]
            ax.scatter(xs, ys, s=sizes, color=line.get_color())
            for b in found.bins:
                ax.annotate(f"n={b.n}", (b.confidence, b.score), fontsize=6,
                            xytext=(4, 4), textcoords="offset points")  # fmt: skip
        # Simulation's correlation can fall below 0: keep such bins in sight.
        low = min([0.0, *(b.score for c in summary.calibration.values() if scorer in c
                         for b in c[scorer].bins)])  # fmt: skip
        ax.set_xlim(0, 1)
        ax.set_ylim(low - 0.02, 1.02)
        ax.set_title(scorer)
        ax.set_xlabel("stated confidence (bin mean)")
        ax.set_ylabel("held-out score (bin mean)")
        ax.legend(fontsize=7)
    return fig
