"""Explanations that generalize: on planted features whose rule is a whole concept
(every animal, every garment, ...), the rules agent names the concept, and its
explanation predicts the feature on sentences whose concept words never occur in the
corpus it learned from (the shipped unseen-members corpus)."""

from __future__ import annotations

import asyncio
import json
import random

import numpy as np

from agent.deps import AgentDeps
from agent.graph import build_graph
from agent.rules.generalize import unseen_member_tests
from agent.rules.hypotheses import evidence_data
from agent.rules.pool import retrieval_pool
from agent.rules.pool_index import PoolIndex
from agent.rules.reasoner import RulesReasoner
from agent.rules.synthesis import Labeled, agreement, evaluate, synthesize
from agent.state import AgentState, Budget, Expect
from evals.truth import held_out, truth_score
from predicates.language import Predicate, TokenView, from_dict
from predicates.lexical import WordClass
from probes.evidence.store import EvidenceStore
from probes.planted import PlantedFeatures, concept_sentences_path
from probes.probe_runner import ProbeRunner

Planted = tuple[EvidenceStore, PlantedFeatures]
# The word each concept's explanation must name (its WordNet class).
NAMES = {
    "concept-animals": "animal",
    "concept-garments": "garment",
    "concept-foods": "food",
    "concept-body-parts": "body part",
    "concept-emotions": "emotion",
    "concept-diseases": "disease",
    "concept-instruments": "instrument",
    "concept-vehicles": "vehicle",
}


def unseen_sentences() -> list[str]:
    with concept_sentences_path().open() as f:
        return [json.loads(line)["text"] for line in f]


async def explain_all(store: EvidenceStore, planted: PlantedFeatures) -> list[AgentState]:
    runner = ProbeRunner(planted)
    deps = AgentDeps(RulesReasoner(retrieval_pool(store, 1500), embed=None), runner, store)
    graph = build_graph(deps).compile()
    features = [planted.feature_index(n) for n in NAMES]
    try:
        outs = await asyncio.gather(
            *(
                graph.ainvoke(
                    AgentState(feature=f, budget=Budget(max_rounds=4)), {"recursion_limit": 200}
                )
                for f in features
            )
        )
    finally:
        await deps.aclose()
    return [AgentState.model_validate(o) for o in outs]


async def unseen_f1(planted: PlantedFeatures, feature: int, predicate: Predicate) -> float:
    results = await ProbeRunner(planted).run(unseen_sentences(), feature)
    data = [Labeled(TokenView.of(r.tokens), tuple(a > 0 for a in r.acts)) for r in results]
    truth = np.fromiter((v for d in data for v in d.labels), dtype=bool)
    assert truth.any()
    return agreement(evaluate(predicate, data), truth).f1


def test_concept_features_are_named_and_predicted_on_unseen_members(
    concept_evidence: Planted,
) -> None:
    store, planted = concept_evidence
    states = asyncio.run(explain_all(store, planted))
    good = 0
    for name, state in zip(NAMES, states, strict=True):
        explanation = state.explanation
        assert explanation is not None and explanation.predicate is not None, name
        assert len(explanation.text.split()) <= 30, explanation.text
        f1 = asyncio.run(
            unseen_f1(planted, planted.feature_index(name), from_dict(explanation.predicate))
        )
        if f1 >= 0.8 and NAMES[name] in explanation.text:
            good += 1
        # Confidence is a held-out estimate, not agreement with what it was fitted to.
        assert explanation.confidence < 1.0 or f1 >= 0.9, (name, explanation.confidence, f1)
    assert good >= 0.75 * len(NAMES), [s.explanation.text for s in states if s.explanation]


def test_a_class_hypothesis_is_tested_on_members_the_evidence_never_showed(
    concept_evidence: Planted,
) -> None:
    store, _ = concept_evidence
    pool = retrieval_pool(store, 1500)
    garments = WordClass(concept="n03419014", name="kinds of garment", examples=("shirt",))
    seen = {"shirt", "shirts", "coat", "suit", "hat", "dress"}
    firing = PoolIndex(pool).firing(garments)
    tests = unseen_member_tests(garments, pool, firing, seen, set(), set(), random.Random(0), n=2)
    assert tests and all(t.expect is Expect.HIGH for t in tests)
    for test in tests:
        assert test.expected_peak is not None
        assert test.expected_peak.lower() not in seen
        assert test.expected_peak.lower().rstrip("s") in {m.rstrip("s") for m in garments.members()}
        assert test.expected_peak in test.text


def test_numbers_of_a_shape_are_explained_by_their_shape(concept_evidence: Planted) -> None:
    store, planted = concept_evidence
    for name, says in (("shape-years", "years"), ("shape-currency-amounts", "currency")):
        feature = planted.feature_index(name)
        found = synthesize(evidence_data(store.feature(feature, non_activating=50))).predicate
        score = truth_score(found, planted.specs[feature], held_out(store, feature))
        assert says in found.describe(), found.describe()
        assert score.f1 >= 0.85, (name, score)
