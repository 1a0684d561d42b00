"""Does the offline agent recover the truth? The `rules` agent on every shipped planted
feature, each explanation judged on the held-out score split (evals.truth).

Per feature: the token-level F1 of the concluded predicate against where the feature
fired, and for the polysemantic ones whether each sense got a label of its own. The
issue's bar: F1 >= 0.9 for at least 80% of the single-rule features, and every sense
of the polysemantic ones named.

Needs the planted evidence (`glossator evidence build --planted`; the whole default
corpus is what the numbers in the README were measured on).

    .venv/bin/python -m benchmarks.planted_recovery [--features a,b] [--max-rounds 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from agent.deps import AgentDeps
from agent.graph import build_graph
from agent.rules.pool import retrieval_pool
from agent.rules.reasoner import RulesReasoner
from agent.state import AgentState, Budget
from benchmarks.agent_batching import RECURSION_LIMIT, open_evidence
from evals.truth import TruthScore, held_out, truth_score
from predicates.language import from_dict
from probes.planted import PlantedFeatures, default_spec_path
from probes.probe_runner import ProbeRunner
from runtime.settings import get_settings

GOOD_F1 = 0.9
SHARE = 0.8  # of single-rule features that must reach GOOD_F1


async def explain_all(deps: AgentDeps, features: list[int], budget: Budget) -> list[AgentState]:
    graph = build_graph(deps).compile()
    config: Any = {"recursion_limit": RECURSION_LIMIT}
    try:
        outs = await asyncio.gather(
            *(graph.ainvoke(AgentState(feature=f, budget=budget), config) for f in features)
        )
    finally:
        await deps.aclose()
    return [AgentState.model_validate(out) for out in outs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="", help="planted ids, comma-separated (all)")
    parser.add_argument("--max-rounds", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    settings = get_settings()
    store = open_evidence(settings, planted=True)
    planted = PlantedFeatures.from_file(default_spec_path(), store.tokenizer)
    names = [n.strip() for n in args.features.split(",") if n.strip()] or planted.feature_names
    features = [planted.feature_index(n) for n in names]
    deps = AgentDeps(RulesReasoner(retrieval_pool(store)), ProbeRunner(planted), store)
    start = time.perf_counter()
    states = asyncio.run(explain_all(deps, features, Budget(max_rounds=args.max_rounds)))
    wall = time.perf_counter() - start

    rows: list[tuple[AgentState, TruthScore]] = []
    for feature, state in zip(features, states, strict=True):
        if state.explanation is None or state.explanation.predicate is None:
            raise SystemExit(f"{planted.feature_names[feature]}: the run concluded nothing")
        predicate = from_dict(state.explanation.predicate)
        rows.append(
            (state, truth_score(predicate, planted.specs[feature], held_out(store, feature)))
        )

    single = [
        score for _, score in rows if not planted.specs[planted.feature_index(score.feature)].senses
    ]
    poly = [score for _, score in rows if score.senses]
    good = sum(score.f1 >= GOOD_F1 for score in single)
    summary = {
        "evidence_id": store.manifest.evidence_id,
        "features": len(rows),
        "wall_seconds": round(wall, 1),
        "single_rule_good": good,
        "single_rule_total": len(single),
        "single_rule_bar_met": good >= SHARE * len(single),
        "polysemantic_named": sum(s.senses_named for s in poly),
        "polysemantic_total": len(poly),
    }
    if args.json:
        per_feature = [_row_dict(state, score) for state, score in rows]
        print(json.dumps({"summary": summary, "per_feature": per_feature}, indent=2))
        return
    _print_table(rows)
    Console().print(summary)


def _row_dict(state: AgentState, score: TruthScore) -> dict[str, Any]:
    assert state.explanation is not None
    return {
        "feature": score.feature,
        "f1": round(score.f1, 3),
        "precision": round(score.agreement.precision, 3),
        "recall": round(score.agreement.recall, 3),
        "senses": {m.sense: round(m.f1, 3) for m in score.senses},
        "labels": state.explanation.labels,
        "rounds": state.round,
        "probe_texts": state.cost.probe_texts,
        "explanation": state.explanation.text,
    }


def _print_table(rows: list[tuple[AgentState, TruthScore]]) -> None:
    table = Table(title="planted features: held-out token F1 of the concluded predicate")
    for column in ("feature", "F1", "P", "R", "senses named", "rounds", "explanation"):
        table.add_column(column, overflow="fold")
    for state, score in rows:
        assert state.explanation is not None
        senses = ", ".join(f"{m.sense} {m.f1:.2f}" for m in score.senses) or "-"
        table.add_row(
            score.feature,
            f"{score.f1:.3f}",
            f"{score.agreement.precision:.2f}",
            f"{score.agreement.recall:.2f}",
            senses,
            str(state.round),
            state.explanation.text[:160],
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
