"""A benchmark run as a report: a Markdown table of mean scores with 95% bootstrap
intervals per explainer and scorer, paired differences against the agent on the same
features, floors (another feature's explanation) and chance lines, calibration of the
stated confidence, hard negatives and label collisions (evals.report_robustness), recall
by activation quantile, explanation length (median words and listed items), cost per
feature, what could not be scored and why, and the plots (evals.plots). It says where
the scoring examples came from: the evidence's score split, or a score corpus."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from evals.calibration import Calibration, calibration
from evals.core import Explained, Score
from evals.floors import CHANCE, floor_name, is_floor
from evals.length import listed_items, words
from evals.metrics import bootstrap_mean_ci, paired_difference_ci
from evals.plots import mean_recall, plot
from evals.report_robustness import (
    COLLISION_SCORER,
    COLLISION_TEXT,
    HARD_TEXT,
    CollisionRow,
    collision_row,
    collision_table,
    decimal,
    hard_row,
    hard_table,
)
from evals.results import BenchConfig

BASELINE = "agent"  # paired differences are taken against this explainer


class Cell(BaseModel):
    n: int  # scored
    unscored: int
    mean: float | None
    lo: float | None
    hi: float | None


class Length(BaseModel):
    """Median length of one explainer's explanations (None when it has none)."""

    explanations: int
    median_words: float | None
    median_listed_items: float | None


class Summary(BaseModel):
    run_id: str
    scored_on: str  # where the scoring examples came from
    explainers: list[str]
    scorers: list[str]
    cells: dict[str, dict[str, Cell]]  # explainer -> scorer -> cell
    paired: dict[str, dict[str, Cell]]  # explainer -> scorer -> (explainer - agent)
    cost: dict[str, dict[str, float]]  # explainer -> mean cost per feature
    failures: dict[str, int]  # explainer -> features it failed on
    unscored_reasons: dict[str, int]  # reason -> count
    judges: dict[str, dict[str, int]]  # explainer -> judge -> scores it judged
    length: dict[str, Length]  # explainer -> median explanation length
    # explainer -> mean detection against random and hard negatives, and specificity
    # against random negatives and each kind of hard one (evals.hard_negatives)
    hard: dict[str, dict[str, float | None]] = {}
    hard_fuzzing: dict[str, dict[str, float | None]] = {}  # the same for fuzzing
    # explainer -> its label collisions (evals.collisions)
    collisions: dict[str, CollisionRow] = {}
    # explainer -> scorer -> its scores with other features' explanations (evals.floors)
    floor: dict[str, dict[str, Cell]] = {}
    # explainer -> scorer -> stated confidence against held-out score (evals.calibration)
    calibration: dict[str, dict[str, Calibration]] = {}
    # explainer -> activation quantile ("0" weakest) -> mean detection recall (evals.plots)
    recall_by_quantile: dict[str, dict[str, float]] = {}


def summarize(
    config: BenchConfig,
    scores: Sequence[Score],
    explanations: dict[tuple[str, int], Explained],
    failures: dict[str, str],
) -> Summary:
    by: dict[tuple[str, str], dict[int, Score]] = defaultdict(dict)
    for s in scores:
        by[(s.explainer, s.scorer)][s.feature] = s
    scores = [s for s in scores if not is_floor(s.explainer)]
    cells: dict[str, dict[str, Cell]] = {}
    paired: dict[str, dict[str, Cell]] = {}
    for explainer in config.explainers:
        cells[explainer], paired[explainer] = {}, {}
        for scorer in config.scorers:
            mine = by[(explainer, scorer)]
            cells[explainer][scorer] = _scored_cell(mine)
            if explainer != BASELINE and (BASELINE, scorer) in by:
                base = by[(BASELINE, scorer)]
                both = [
                    f
                    for f, s in mine.items()
                    if s.score is not None and f in base and base[f].score is not None
                ]
                a = [mine[f].score for f in both]
                b = [base[f].score for f in both]
                paired[explainer][scorer] = _paired(a, b)  # type: ignore[arg-type]
    # The first sentence of each reason: what failed and why, without per-feature detail.
    reasons = Counter((s.error or "").split(";")[0][:200] for s in scores if s.score is None)
    failed = Counter(key.split(":")[0] for key in failures)
    judged: dict[str, Counter[str]] = defaultdict(Counter)
    for s in scores:
        if s.score is not None:
            judged[s.explainer][s.judge] += 1
    return Summary(
        run_id=config.run_id,
        scored_on=scored_on(config),
        explainers=config.explainers,
        scorers=config.scorers,
        cells=cells,
        paired=paired,
        cost=_cost(config, scores, explanations),
        failures={e: failed.get(e, 0) for e in config.explainers},
        unscored_reasons=dict(reasons.most_common()),
        judges={e: dict(judged[e]) for e in config.explainers},
        length={e: _length(e, explanations) for e in config.explainers},
        hard={e: hard_row(by[(e, "detection")]) for e in config.explainers},
        hard_fuzzing={e: hard_row(by[(e, "fuzzing")]) for e in config.explainers},
        collisions={
            e: collision_row(
                sum(1 for (x, _) in explanations if x == e),
                by[(e, COLLISION_SCORER)],
                by[(e, "detection")],
            )
            for e in config.explainers
            if "detection" in config.scorers
        },
        floor={
            e: {c: _scored_cell(by[(floor_name(e), c)]) for c in config.scorers}
            for e in config.explainers
        },
        calibration=_calibration(config, by, explanations),
        recall_by_quantile=mean_recall(scores, config.explainers),
    )


def _calibration(
    config: BenchConfig,
    by: dict[tuple[str, str], dict[int, Score]],
    explanations: dict[tuple[str, int], Explained],
) -> dict[str, dict[str, Calibration]]:
    out: dict[str, dict[str, Calibration]] = {}
    for e in config.explainers:
        for scorer in CALIBRATED:
            pairs = [
                (explained.confidence, s.score)
                for f, s in by[(e, scorer)].items()
                if s.score is not None
                and (explained := explanations.get((e, f))) is not None
                and explained.confidence is not None
            ]
            found = calibration(pairs)
            if found is not None:
                out.setdefault(e, {})[scorer] = found
    return out


def _scored_cell(scores: dict[int, Score]) -> Cell:
    values = [s.score for s in scores.values() if s.score is not None]
    return _cell(values, len(scores) - len(values))


def scored_on(config: BenchConfig) -> str:
    if config.score_corpus is not None:
        return (
            f"the score corpus {config.score_corpus} (all of it held out; evidence "
            f"`{config.score_evidence_id}`)"
        )
    return f"the held-out score split of evidence `{config.evidence_id}`"


def _length(explainer: str, explanations: dict[tuple[str, int], Explained]) -> Length:
    mine = [e for (name, _), e in explanations.items() if name == explainer]
    if not mine:
        return Length(explanations=0, median_words=None, median_listed_items=None)
    return Length(
        explanations=len(mine),
        median_words=float(np.median([words(e.text) for e in mine])),
        median_listed_items=float(np.median([listed_items(e.text, e.predicate) for e in mine])),
    )


def _cell(values: list[float], unscored: int) -> Cell:
    if not values:
        return Cell(n=0, unscored=unscored, mean=None, lo=None, hi=None)
    lo, hi = bootstrap_mean_ci(values)
    return Cell(n=len(values), unscored=unscored, mean=float(np.mean(values)), lo=lo, hi=hi)


def _paired(a: list[float], b: list[float]) -> Cell:
    if not a:
        return Cell(n=0, unscored=0, mean=None, lo=None, hi=None)
    mean, lo, hi = paired_difference_ci(a, b)
    return Cell(n=len(a), unscored=0, mean=mean, lo=lo, hi=hi)


def _cost(
    config: BenchConfig, scores: Sequence[Score], explanations: dict[tuple[str, int], Explained]
) -> dict[str, dict[str, float]]:
    """Mean per feature: what explaining cost, plus what scoring it cost (LLM judge)."""
    out: dict[str, dict[str, float]] = {}
    for explainer in config.explainers:
        mine = [e for (name, _), e in explanations.items() if name == explainer]
        judged = [s for s in scores if s.explainer == explainer]
        n = max(len(mine), 1)
        out[explainer] = {
            "llm_calls": sum(e.cost.llm_calls for e in mine) / n,
            "llm_tokens": sum(e.cost.llm_tokens for e in mine) / n,
            "probe_texts": sum(e.cost.probe_texts for e in mine) / n,
            "seconds": sum(e.cost.seconds for e in mine) / n,
            "scoring_llm_calls": sum(s.llm_calls for s in judged) / n,
            "scoring_seconds": sum(s.seconds for s in judged) / n,
        }
    return out


# -- rendering ---------------------------------------------------------------------------


def markdown(config: BenchConfig, summary: Summary, plots: Sequence[str] = ()) -> str:
    names = config.feature_names
    lines = [
        f"# Benchmark `{config.run_id}`",
        "",
        f"- source: {config.source}; evidence `{config.evidence_id}`",
        f"- {len(config.features)} features"
        + (f" ({', '.join(names[f] for f in config.features[:8])}…)" if names else ""),
        f"- judges, in order of preference: {', '.join(config.judges)}",
        f"- scoring examples per feature, from {summary.scored_on}: {config.per_quantile} per "
        f"activation quantile plus {config.non_activating} non-activating (seed {config.seed})",
        "",
        "## Scores",
        "",
        "Mean over features, [95% bootstrap interval], (features scored).",
        "",
        _table(summary, summary.cells),
    ]
    if any(summary.paired.values()):
        lines += [
            "",
            f"## Paired differences against `{BASELINE}`",
            "",
            f"Explainer minus {BASELINE} on the features both were scored on, "
            "[95% bootstrap interval], (features).",
            "",
            _table(summary, {e: c for e, c in summary.paired.items() if c}),
        ]
    if any(c.mean is not None for row in summary.floor.values() for c in row.values()):
        lines += ["", "## Floors", "", _FLOOR_TEXT, "", _floor_table(summary)]
    if summary.calibration:
        lines += ["", "## Calibration", "", _CALIBRATION_TEXT, "", _calibration_table(summary)]
    hard = {"detection": summary.hard, "fuzzing": summary.hard_fuzzing}
    if any(row.get("hard") is not None for rows in hard.values() for row in rows.values()):
        lines += ["", "## Hard negatives", "", HARD_TEXT, "", hard_table(summary.explainers, hard)]
    if summary.collisions:
        lines += ["", "## Label collisions", "", COLLISION_TEXT, ""]
        lines += [collision_table(summary.explainers, summary.collisions)]
    lines += _quantile_table(summary)  # nothing without detection scores
    lines += ["", "## Explanation length (median)", "", _length_table(summary)]
    lines += ["", "## Cost per feature (mean)", "", _cost_table(summary)]
    lines += ["", "## Who judged", "", "Scores per explainer by the judge that read them.", ""]
    lines += [
        f"- {e}: " + (", ".join(f"{j} {n}" for j, n in sorted(c.items())) or "nothing scored")
        for e, c in summary.judges.items()
    ]
    if summary.unscored_reasons:
        lines += ["", "## Not scored", ""]
        lines += [f"- {n} × {reason}" for reason, n in summary.unscored_reasons.items()]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def _table(summary: Summary, rows: dict[str, dict[str, Cell]]) -> str:
    head = "| explainer | " + " | ".join(summary.scorers) + " |"
    rule = "| --- |" + " --- |" * len(summary.scorers)
    body = [
        f"| {explainer} | "
        + " | ".join(_fmt(cells.get(scorer)) for scorer in summary.scorers)
        + " |"
        for explainer, cells in rows.items()
    ]
    return "\n".join([head, rule, *body])


def _fmt(cell: Cell | None) -> str:
    if cell is None or cell.mean is None:
        return "–" + (f" ({cell.unscored} unscored)" if cell and cell.unscored else "")
    return f"{cell.mean:.3f} [{cell.lo:.3f}, {cell.hi:.3f}] ({cell.n})"


CALIBRATED = ("detection", "fuzzing", "simulation")  # scores on a 0-1 scale worth comparing
_CALIBRATION_TEXT = (
    "Each explainer's stated confidence against its held-out score: expected calibration "
    "error over ten confidence bins (0 is calibrated), with mean confidence and mean score."
)


def _calibration_table(summary: Summary) -> str:
    lines = ["| explainer | scorer | features | ECE | mean confidence | mean score |"]
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for e, by_scorer in summary.calibration.items():
        for scorer, found in by_scorer.items():
            confidence = sum(b.n * b.confidence for b in found.bins) / found.n
            score = sum(b.n * b.score for b in found.bins) / found.n
            lines.append(
                f"| {e} | {scorer} | {found.n} | {found.ece:.3f} | {confidence:.3f} | {score:.3f} |"
            )
    return "\n".join(lines)


def _quantile_table(summary: Summary) -> list[str]:
    """The recall curves' numbers (recall_curves.png) under their heading; no lines
    without detection scores. Floors are not in them (evals.plots.mean_recall)."""
    curves = summary.recall_by_quantile
    quantiles = sorted({q for recall in curves.values() for q in recall}, key=int)
    if not quantiles:
        return []
    text = (
        "Detection recall of each explainer's explanations by activation quantile of the "
        "held-out examples (0 = weakest), mean over features: recall that falls toward 0 "
        "says the explanation covers only the feature's strongest activations."
    )
    head = "| explainer | " + " | ".join(quantiles) + " |"
    lines = ["", "## Detection recall by activation quantile", "", text, "", head]
    lines.append("| --- |" + " --- |" * len(quantiles))
    for e, recall in curves.items():
        lines.append(f"| {e} | " + " | ".join(decimal(recall.get(q)) for q in quantiles) + " |")
    return lines


_FLOOR_TEXT = (
    "Each explainer's mean score, its floor (the same explainer's explanations of other "
    "features of the run, scored on these features by the same judge), and the distance "
    "above the floor; the last row is what a judge that guesses gets."
)


def _floor_table(summary: Summary) -> str:
    head = "| explainer | " + " | ".join(summary.scorers) + " |"
    lines = [head, "| --- |" + " --- |" * len(summary.scorers)]
    for e in summary.explainers:
        cells = []
        for scorer in summary.scorers:
            mine, floor = summary.cells[e].get(scorer), summary.floor.get(e, {}).get(scorer)
            if mine is None or mine.mean is None or floor is None or floor.mean is None:
                cells.append("–")
                continue
            cells.append(f"{mine.mean:.3f}, floor {floor.mean:.3f} ({mine.mean - floor.mean:+.3f})")
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    chance = [decimal(CHANCE.get(scorer)) for scorer in summary.scorers]
    lines.append("| chance | " + " | ".join(chance) + " |")
    return "\n".join(lines)


def _length_table(summary: Summary) -> str:
    """Words of the text, and items it lists (predicate lists, or quoted items and
    "N more" in prose): see evals.length."""
    lines = ["| explainer | words | listed items | explanations |", "| --- | --- | --- | --- |"]
    for e in summary.explainers:
        n = summary.length[e]
        cells = [_number(n.median_words), _number(n.median_listed_items), str(n.explanations)]
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def _cost_table(summary: Summary) -> str:
    keys = ["llm_calls", "llm_tokens", "probe_texts", "seconds", "scoring_llm_calls"]
    head = "| explainer | " + " | ".join(k.replace("_", " ") for k in keys) + " | failures |"
    rule = "| --- |" + " --- |" * (len(keys) + 1)
    body = [
        f"| {e} | "
        + " | ".join(f"{summary.cost[e][k]:.1f}" for k in keys)
        + f" | {summary.failures[e]} |"
        for e in summary.explainers
    ]
    return "\n".join([head, rule, *body])


OUTPUT_SCORERS = ("output", "output-pick")


def results_json(
    config: BenchConfig,
    summary: Summary,
    scores: Sequence[Score],
    explanations: dict[tuple[str, int], Explained],
) -> dict[str, Any]:
    """The `--json` document: one row per (feature, explainer, scorer), the floors' rows
    (each feature scored with another feature's explanation, evals.floors) apart, and the
    summary."""
    rows: list[dict[str, Any]] = []
    floors: list[dict[str, Any]] = []
    for s in scores:
        explained = explanations.get((s.explainer, s.feature))
        (floors if is_floor(s.explainer) else rows).append(
            {
                "feature": s.feature,
                "explainer": s.explainer,
                "scorer": s.scorer,
                "score": s.score,
                "explanation": explained.text if explained else None,
                "words": words(explained.text) if explained else None,
                "listed_items": (
                    listed_items(explained.text, explained.predicate) if explained else None
                ),
                "output": explained.output_text if explained else None,
                "judge": s.judge,
                "error": s.error,
                # What the output scorers read off steering (the promoted tokens, their
                # precision and recall), to see why a claim scored as it did.
                **({"details": s.details} if s.scorer in OUTPUT_SCORERS else {}),
            }
        )
    return {
        "config": config.model_dump(),
        "results": rows,
        "floors": floors,
        "summary": summary.model_dump(),
    }


def write_report(
    out_dir: Path,
    config: BenchConfig,
    scores: Sequence[Score],
    explanations: dict[tuple[str, int], Explained],
    failures: dict[str, str],
    densities: dict[int, float],
) -> Path:
    """report.md, results.json and the plots in `out_dir`; returns report.md's path."""
    summary = summarize(config, scores, explanations, failures)
    plots = plot(summary, scores, densities, out_dir)
    report = out_dir / "report.md"
    report.write_text(markdown(config, summary, [str(p) for p in plots]))
    document = results_json(config, summary, scores, explanations)
    (out_dir / "results.json").write_text(json.dumps(document, indent=1))
    return report
