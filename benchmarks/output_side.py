"""The output side of a benchmark run, from its results.json (`glossator bench --json`
with the `output` and `output-pick` scorers, `detection` for the input side):

- share of features with a measurable output effect: steering them (clamped at 2x their
  largest activation, on held-out texts) made some token at least twice as likely;
- output scores per explainer (mean, with the floor: each feature scored with another
  feature's claim by the same explainer), and how often the agent states an output side;
- features with a weak input explanation (the agent's detection below WEAK_INPUT) that
  get a strong output one (its output F1 on held-out steering at least STRONG_OUTPUT).

    GLOSSATOR_DATA_DIR=... .venv/bin/glossator bench --features sample:100 --seed 1 \\
        --explainers agent,logitlens --scorers detection,output,output-pick --json run.json
    .venv/bin/python -m benchmarks.output_side run.json [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

WEAK_INPUT = 0.65  # detection balanced accuracy: chance is 0.5
STRONG_OUTPUT = 0.5  # output F1 (the agent's own bar to confirm a claim)


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def summarize(document: dict[str, Any]) -> dict[str, Any]:
    score: dict[tuple[str, str, int], float] = {}
    promoted: dict[int, list[str]] = {}
    stated: dict[str, set[int]] = defaultdict(set)
    for row in document["results"]:
        if row["score"] is not None:
            score[row["explainer"], row["scorer"], row["feature"]] = row["score"]
        if row["scorer"] == "output" and row.get("details"):
            promoted[row["feature"]] = row["details"].get("promoted", [])
        if row.get("output"):
            stated[row["explainer"]].add(row["feature"])
    floor: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in document["floors"]:
        if row["score"] is not None:
            floor[row["explainer"].split("~")[0], row["scorer"]].append(row["score"])
    features = sorted(document["config"]["features"])
    explainers = document["config"]["explainers"]
    per_explainer = {}
    for explainer in explainers:
        per_explainer[explainer] = {
            "states_output": len(stated[explainer]),
            **{
                scorer: {
                    "mean": _mean(
                        [score[k] for f in features if (k := (explainer, scorer, f)) in score]
                    ),
                    "scored": sum((explainer, scorer, f) in score for f in features),
                    "floor": _mean(floor[explainer, scorer]),
                }
                for scorer in ("detection", "output", "output-pick")
            },
        }
    weak = [f for f in features if score.get(("agent", "detection", f), 1.0) < WEAK_INPUT]
    strong = [f for f in weak if score.get(("agent", "output", f), 0.0) >= STRONG_OUTPUT]
    return {
        "features": len(features),
        "steered": len(promoted),
        "measurable_output_effect": sum(bool(p) for p in promoted.values()),
        "explainers": per_explainer,
        "weak_input": len(weak),
        "weak_input_strong_output": len(strong),
        "weak_input_strong_output_features": strong,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a bench run's results.json")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    summary = summarize(json.loads(args.results.read_text()))
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    print(
        f"{summary['measurable_output_effect']} of {summary['steered']} steered features "
        f"(of {summary['features']}) have a measurable output effect"
    )
    for explainer, cells in summary["explainers"].items():
        parts = [f"states an output side on {cells['states_output']}"]
        for scorer in ("detection", "output", "output-pick"):
            cell = cells[scorer]
            if cell["scored"]:
                parts.append(f"{scorer} {cell['mean']} (floor {cell['floor']}, n={cell['scored']})")
        print(f"{explainer}: " + "; ".join(parts))
    print(
        f"weak input (agent detection < {WEAK_INPUT}): {summary['weak_input']}; of them with "
        f"a strong output claim (output F1 >= {STRONG_OUTPUT}): "
        f"{summary['weak_input_strong_output']}"
    )


if __name__ == "__main__":
    main()
