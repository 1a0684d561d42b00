"""Outputs: what the feature does to the next token, tested by steering. Runs once,
after the input side is decided, for an SAE's features (planted ones have no output
side) and a reasoner that reads outputs.

Two steering experiments clamp the feature (`probes.promotions.STEER_TIMES` times its
largest activation) on contexts of the explain split, never the score split: the
reasoner proposes output claims from the first (S1) and each is judged on the second
(S2), whose texts it never saw.
"""

from __future__ import annotations

from typing import Any, cast

from agent.deps import AgentDeps
from agent.reasoner import OutputReasoner, reads_outputs
from agent.state import AgentState, Hypothesis, OutputTest
from probes.evidence.store import FeatureEvidence
from probes.promotions import STEER_TIMES, Promotions
from probes.steering import Steering

TEXTS = 8  # contexts per steering experiment: fewer gave noisy promoted sets
TEXT_TOKENS = 32  # each cut to its first tokens


def steering_texts(evidence: FeatureEvidence, n: int) -> list[str]:
    """Up to `n` distinct explain-split contexts, cut short: where the feature never
    fired first (what it adds there is its own doing), then its quantile samples (a
    dense feature has few quiet contexts; the clamp sets its activation either way)."""
    examples = evidence.non_activating + [e for b in evidence.quantiles for e in b.examples]
    texts = ("".join(e.tokens[:TEXT_TOKENS]) for e in examples)
    return list(dict.fromkeys(t for t in texts if t.strip()))[:n]


async def outputs(state: AgentState, deps: AgentDeps) -> dict[str, Any]:
    if state.output_tests or not deps.probe.steers or not reads_outputs(deps.reasoner):
        return {}
    reasoner = cast(OutputReasoner, deps.reasoner)
    evidence = deps.evidence(state.feature)
    texts = steering_texts(evidence, 2 * TEXTS)
    if len(texts) < 2 or evidence.stats.max_act <= 0:
        return {}  # nothing to steer on, or no scale to steer at
    clamp = STEER_TIMES * evidence.stats.max_act
    steering = Steering(state.feature, clamp=clamp)
    half = len(texts) // 2
    seen = await deps.probe.promotions(texts[:half], steering)
    tested = await deps.probe.promotions(texts[half:], steering)
    tests = [_test("S1", texts[:half], clamp, seen), _test("S2", texts[half:], clamp, tested)]
    cost = state.cost.model_copy(update={"probe_texts": state.cost.probe_texts + len(texts)})
    state = state.model_copy(update={"cost": cost, "output_tests": tests})
    if not seen.promoted_count:  # no token made twice as likely: nothing to claim
        return {"output_tests": tests, "cost": cost}
    proposed, cost = await deps.think(state, reasoner.output_hypotheses(state, evidence, seen))
    start = len(state.hypotheses)
    decided: list[Hypothesis] = []
    for i, p in enumerate(proposed):
        hypothesis = Hypothesis(id=f"H{start + i + 1}", **p.model_dump())
        state = state.model_copy(update={"cost": cost})
        verdict, cost = await deps.think(
            state, reasoner.judge_output(state, hypothesis, tested, tests[1].id)
        )
        decided.append(
            hypothesis.model_copy(update={"status": verdict.status, "decided_by": verdict.cites})
        )
    return {"hypotheses": [*state.hypotheses, *decided], "output_tests": tests, "cost": cost}


def _test(test_id: str, texts: list[str], clamp: float, found: Promotions) -> OutputTest:
    return OutputTest(
        id=test_id, texts=texts, clamp=clamp, kl=found.kl, promoted=found.promoted_tokens
    )
