"""Which offline reasoner is best? `rules` against `local` (SmolLM2 in process), each
running the agent on the same planted features, each explanation judged the same way.

Per feature, both backends explain it with the same budget; then each explanation is
judged on the same held-out texts (evals.core.scoring_set: the score split, which no
explainer saw; activating texts from every quantile plus texts where it never fired):
does the feature fire anywhere in this text? The rules' concluded predicate answers by
running; prose is answered by the local model as judge (yes/no per text, from its
log-probabilities), which also judges the rules' own sentence for a like-for-like view.
Scores: text-level balanced accuracy and F1 against the truth, plus the predicate's
token-level F1 for reference. Wall time per feature per backend, and the local model's
latency and tokens/s, are printed too. The result picks `auto`'s offline default
(runtime.agent.OFFLINE_DEFAULT).

Needs the planted evidence (`glossator evidence build --planted`).

    .venv/bin/python -m benchmarks.offline_backends [--features a,b | --all]
        [--max-rounds 3] [--per-quantile 1] [--quiet-texts 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from agent.deps import AgentDeps
from agent.graph import build_graph
from agent.llm_reasoner import LLMReasoner
from agent.reasoner import Reasoner
from agent.rules.hypotheses import labeled
from agent.rules.pool import retrieval_pool
from agent.rules.reasoner import RulesReasoner
from agent.rules.synthesis import agreement, evaluate
from agent.state import AgentState, Budget
from benchmarks.agent_batching import RECURSION_LIMIT, open_evidence
from evals.core import scoring_set
from llm_client import LLMClient, Message, delimit
from llm_client.local import LocalStats, LocalTransport, local_config
from predicates.language import from_dict
from probes.evidence.store import EvidenceStore, Example
from probes.model import prepare_default_model
from probes.planted import PlantedFeatures, default_spec_path
from probes.probe_runner import ProbeRunner
from runtime.loaders import models_dir
from runtime.settings import get_settings

DEFAULT_FEATURES = "word-love,question-mark,negation"
YES, NO = ("yes", "Yes", " yes", " Yes", "YES"), ("no", "No", " no", " No", "NO")
LOGPROB_FLOOR = 30.0  # a yes/no spelling outside the top 10 counts as log-probability -30


@dataclass
class Judged:
    """One explanation's text-level predictions against the truth; `scores` ranks the
    texts (the judge's yes-minus-no log-odds; a predicate's verdict as 0/1)."""

    predicted: list[bool]
    truth: list[bool]
    scores: list[float]

    def counts(self) -> tuple[int, int, int, int]:
        p, t = np.array(self.predicted, dtype=bool), np.array(self.truth, dtype=bool)
        return int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum()), int((~p & ~t).sum())

    def auc(self) -> float:
        """P(a firing text outranks a quiet one), ties half: free of the judge's bias
        towards yes or no (delphi reports it for detection)."""
        s, t = np.array(self.scores), np.array(self.truth, dtype=bool)
        pos, neg = s[t][:, None], s[~t][None, :]
        if not pos.size or not neg.size:
            return float("nan")
        return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def metrics(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Balanced accuracy (TPR + TNR) / 2 and F1 of 'fires'."""
    tpr = tp / (tp + fn) if tp + fn else 0.0
    tnr = tn / (tn + fp) if tn + fp else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return {"balanced_accuracy": round((tpr + tnr) / 2, 3), "f1": round(f1, 3)}


@dataclass
class Row:
    feature: str
    backend: str  # "rules", "rules (judge)", "local"
    explanation: str | None
    error: str | None = None
    judged: Judged | None = None
    token_f1: float | None = None
    run_seconds: float = 0.0
    judge_seconds: float = 0.0
    llm_calls: int = 0

    def as_dict(self) -> dict[str, Any]:
        scores = (
            {**metrics(*self.judged.counts()), "auc": round(self.judged.auc(), 3)}
            if self.judged
            else {}
        )
        return {
            "feature": self.feature,
            "backend": self.backend,
            **scores,
            "token_f1": None if self.token_f1 is None else round(self.token_f1, 3),
            "run_seconds": round(self.run_seconds, 1),
            "judge_seconds": round(self.judge_seconds, 1),
            "llm_calls": self.llm_calls,
            "explanation": self.explanation,
            "error": self.error,
        }


async def explain(
    reasoner: Reasoner, planted: PlantedFeatures, store: EvidenceStore, feature: int, budget: Budget
) -> tuple[AgentState | None, str | None, float]:
    """One agent run: its final state (None and the error when it failed) and seconds."""
    probe = ProbeRunner(planted)
    graph = build_graph(AgentDeps(reasoner, probe, store)).compile()
    start = time.perf_counter()
    try:
        out = await graph.ainvoke(
            AgentState(feature=feature, budget=budget), {"recursion_limit": RECURSION_LIMIT}
        )
    except Exception as error:  # a failed run is reported as failed, with its reason
        return None, f"{type(error).__name__}: {error}"[:300], time.perf_counter() - start
    finally:
        await probe.close()
    return AgentState.model_validate(out), None, time.perf_counter() - start


async def judge_prose(
    client: LLMClient, explanation: str, examples: Sequence[Example]
) -> tuple[list[bool], list[float]]:
    """Per text, whether the local model says the feature fires in it by `explanation`,
    and its yes-minus-no log-odds. The explanation leads, so the prompts share a cached
    prefix. (Of three phrasings tried, this one ranked best; all were near chance.)"""
    system = f"A detector works like this: {explanation}"
    verdicts, odds = [], []
    for e in examples:
        ask = (
            f"{delimit('text', e.text)}\n\nDoes the text above contain something the "
            "detector fires on? Answer yes or no."
        )
        messages: list[Message] = [
            {"role": "system", "content": system},
            {"role": "user", "content": ask},
        ]
        reply = await client.complete_logprobs(messages, purpose="judge", top_logprobs=10)
        top = reply.tokens[0].top if reply.tokens else {}
        yes = max(top.get(t, -LOGPROB_FLOOR) for t in YES)
        no = max(top.get(t, -LOGPROB_FLOOR) for t in NO)
        odds.append(yes - no)
        verdicts.append(yes > no if yes != no else reply.text.strip().lower().startswith("yes"))
    return verdicts, odds


def judge_predicate(predicate: dict[str, Any], examples: Sequence[Example]) -> tuple[Judged, float]:
    """Text level (fires on any scored token) and token-level F1 of a rules predicate."""
    data = labeled(list(examples))
    found = from_dict(predicate)
    predicted = [any(item.verdicts(found)) for item in data]
    truth_tokens = np.fromiter((v for item in data for v in item.labels), dtype=bool)
    token_f1 = agreement(evaluate(found, data), truth_tokens).f1
    truth = [e.max_act > 0 for e in examples]
    return Judged(predicted, truth, [float(p) for p in predicted]), token_f1


def stats_delta(before: LocalStats, after: LocalStats) -> dict[str, float]:
    calls = after.calls - before.calls
    seconds = after.seconds - before.seconds
    new = after.new_tokens - before.new_tokens
    prompt = after.prompt_tokens - before.prompt_tokens
    return {
        "calls": calls,
        "seconds_per_call": round(seconds / calls, 2) if calls else 0.0,
        "prompt_tokens_per_call": round(prompt / calls) if calls else 0,
        "new_tokens_per_call": round(new / calls, 1) if calls else 0.0,
        "new_tokens_per_second": round(new / seconds, 1) if seconds else 0.0,
    }


async def compare(args: argparse.Namespace) -> dict[str, Any]:
    settings = get_settings()
    store = open_evidence(settings, planted=True)
    planted = PlantedFeatures.from_file(default_spec_path(), store.tokenizer)
    names = planted.feature_names if args.all else args.features.split(",")
    transport = LocalTransport(prepare_default_model(models_dir(settings)), "cpu", "float32")
    client = LLMClient(local_config(transport), cache=None, transport=transport)
    budget = Budget(max_rounds=args.max_rounds)
    rules, local = RulesReasoner(retrieval_pool(store)), LLMReasoner(client, "local")
    rows: list[Row] = []
    agent_stats, judge_stats = LocalStats(), LocalStats()
    for name in names:
        feature = planted.feature_index(name.strip())
        held = scoring_set(store, feature, args.per_quantile, args.quiet_texts)
        examples, truth = held.examples, [e.max_act > 0 for e in held.examples]
        print(f"{name}: {len(examples)} held-out texts", file=sys.stderr, flush=True)
        for backend, reasoner in (("rules", rules), ("local", local)):
            before = replace(transport.stats)
            state, error, seconds = await explain(reasoner, planted, store, feature, budget)
            _add(agent_stats, before, transport.stats)
            text = state.explanation.text if state and state.explanation else None
            row = Row(name, backend, text, error, run_seconds=seconds)
            row.llm_calls = state.cost.llm_calls if state else 0
            predicate = state.explanation.predicate if state and state.explanation else None
            if predicate is not None:
                row.judged, row.token_f1 = judge_predicate(predicate, examples)
            rows.append(row)
            if text is None:
                continue
            before, start = replace(transport.stats), time.perf_counter()
            verdicts, odds = await judge_prose(client, text, examples)
            _add(judge_stats, before, transport.stats)
            judged = Judged(verdicts, truth, odds)
            if predicate is None:
                row.judged, row.judge_seconds = judged, time.perf_counter() - start
            else:
                prose = Row(name, f"{backend} (judge)", text, judged=judged)
                prose.judge_seconds = time.perf_counter() - start
                rows.append(prose)
    return {
        "evidence_id": store.manifest.evidence_id,
        "budget": budget.model_dump(),
        "rows": [r.as_dict() for r in rows],
        "totals": totals(rows),
        "local_agent_calls": stats_delta(LocalStats(), agent_stats),
        "local_judge_calls": stats_delta(LocalStats(), judge_stats),
    }


def totals(rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
    """Per backend: text-level counts pooled over features, mean AUC, failed runs."""
    out = {}
    for backend in dict.fromkeys(r.backend for r in rows):
        mine = [r for r in rows if r.backend == backend]
        judged = [r.judged for r in mine if r.judged]
        pooled = metrics(*np.sum([j.counts() for j in judged], axis=0).tolist()) if judged else {}
        auc = round(float(np.mean([j.auc() for j in judged])), 3) if judged else None
        failed = len(mine) - len(judged)
        out[backend] = {**pooled, "mean_auc": auc, "failed": failed, "features": len(mine)}
    return out


def _add(total: LocalStats, before: LocalStats, after: LocalStats) -> None:
    total.calls += after.calls - before.calls
    total.prompt_tokens += after.prompt_tokens - before.prompt_tokens
    total.new_tokens += after.new_tokens - before.new_tokens
    total.seconds += after.seconds - before.seconds


def print_result(result: dict[str, Any]) -> None:
    table = Table(title="offline backends on planted features (held-out texts, text level)")
    columns = (
        "feature",
        "backend",
        "bal. acc",
        "F1",
        "token F1",
        "run s",
        "judge s",
        "explanation",
    )
    for column in columns:
        table.add_column(column, overflow="fold")
    for r in result["rows"]:
        table.add_row(
            r["feature"],
            r["backend"],
            str(r.get("balanced_accuracy", "-")),
            str(r.get("f1", "-")),
            str(r.get("auc", "-")),
            "-" if r["token_f1"] is None else str(r["token_f1"]),
            str(r["run_seconds"]),
            str(r["judge_seconds"]),
            (r["explanation"] or f"FAILED {r['error']}")[:120],
        )
    console = Console(width=200)
    console.print(table)
    console.print({"totals": result["totals"]})
    console.print({"local agent calls": result["local_agent_calls"]})
    console.print({"local judge calls": result["local_judge_calls"]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default=DEFAULT_FEATURES, help="planted ids, a,b,c")
    parser.add_argument("--all", action="store_true", help="every shipped planted feature")
    parser.add_argument("--max-rounds", type=int, default=3)
    parser.add_argument("--per-quantile", type=int, default=1, help="held-out texts per bin")
    parser.add_argument("--quiet-texts", type=int, default=10, help="held-out quiet texts")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    result = asyncio.run(compare(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_result(result)


if __name__ == "__main__":
    main()
