"""Polysemantic features: the rules reasoner names each unrelated sense (real
all-MiniLM-L6-v2 embeddings, planted features on the real default corpus)."""

from __future__ import annotations

import asyncio

import pytest

from agent.deps import AgentDeps
from agent.graph import build_graph
from agent.rules.hypotheses import evidence_data
from agent.rules.pool import retrieval_pool
from agent.rules.reasoner import RulesReasoner
from agent.rules.senses import split_predicate, split_senses
from agent.rules.synthesis import Labeled, synthesize
from agent.state import AgentState
from evals.truth import held_out, truth_score
from lexicon.embeddings import MiniLMEmbedder
from predicates.language import AnyOf, TokenIn, TokenView, WordIn, from_dict
from probes.evidence.store import EvidenceStore
from probes.planted import PlantedFeatures
from probes.probe_runner import ProbeRunner

Planted = tuple[EvidenceStore, PlantedFeatures]
EMBED = MiniLMEmbedder()


def words_firing(words: list[str]) -> list[Labeled]:
    """Each word alone as a text on which the feature fired."""
    return [Labeled(TokenView.of([w]), (True,)) for w in words]


def test_unrelated_groups_split_and_a_coherent_list_does_not() -> None:
    mixed = ["dog", "cat", "horse", "mouse", "day", "week", "year", "hour"]
    split = split_senses(mixed, words_firing(mixed), EMBED)
    assert sorted(map(sorted, split.groups)) == [
        ["cat", "dog", "horse", "mouse"],
        ["day", "hour", "week", "year"],
    ]
    colours = ["red", "green", "blue", "black", "white", "yellow", "silver"]
    assert split_senses(colours, words_firing(colours), EMBED).groups == (tuple(colours),)
    # A stray pair that carries little of the firing stays in the list.
    mostly = ["def", "return", "lambda", "yield", "elif"] * 5 + ["isinstance"]
    data = words_firing(mostly)
    assert len(split_senses(sorted(set(mostly)), data, EMBED).groups) == 1


def test_split_predicate_fires_on_the_same_tokens() -> None:
    words = ("dog", "cat", "horse", "mouse", "day", "week", "year", "hour")
    data = [*words_firing(list(words)), Labeled(TokenView.of(["the", " sky"]), (False, False))]
    whole = AnyOf(parts=(WordIn(words=words), TokenIn(words=("?",))))
    split = split_predicate(whole, data, EMBED)
    assert isinstance(split, AnyOf) and len(split.parts) == 3
    for item in data:
        assert split.evaluate(item.view) == whole.evaluate(item.view)


@pytest.mark.parametrize("name", ["animals-or-time-units", "question-or-never"])
def test_each_sense_of_a_polysemantic_feature_gets_a_label(
    planted_evidence: Planted, name: str
) -> None:
    store, planted = planted_evidence
    feature = planted.feature_index(name)
    found = synthesize(evidence_data(store.feature(feature, non_activating=50))).predicate
    split = split_predicate(found, evidence_data(store.feature(feature, non_activating=50)), EMBED)
    data = held_out(store, feature)
    score = truth_score(split, planted.specs[feature], data)
    assert score.senses_named, score
    # A sense may be named by its class (vertebrates, units of time), which reaches
    # further than the planted list: close to it, not equal.
    assert score.f1 > 0.85
    # Synthesis itself keeps the senses apart (a class or a list each), never one
    # list for both.
    assert isinstance(split, AnyOf) and len(split.parts) >= 2


@pytest.mark.parametrize("name", ["calendar-names", "negation", "unix-jargon", "animal-words"])
def test_single_rule_word_lists_stay_one_sense(planted_evidence: Planted, name: str) -> None:
    store, planted = planted_evidence
    data = evidence_data(store.feature(planted.feature_index(name), non_activating=50))
    found = synthesize(data).predicate
    assert split_predicate(found, data, EMBED) == found


def test_the_agent_concludes_with_one_label_per_sense(planted_evidence: Planted) -> None:
    store, planted = planted_evidence
    feature = planted.feature_index("question-or-never")
    deps = AgentDeps(RulesReasoner(retrieval_pool(store, 1500)), ProbeRunner(planted), store)
    graph = build_graph(deps).compile()

    async def main() -> AgentState:
        try:
            out = await graph.ainvoke(AgentState(feature=feature), {"recursion_limit": 200})
        finally:
            await deps.aclose()
        return AgentState.model_validate(out)

    explanation = asyncio.run(main()).explanation
    assert explanation is not None and explanation.predicate is not None
    assert explanation.text.startswith("Polysemantic") and len(explanation.labels) == 2
    score = truth_score(
        from_dict(explanation.predicate), planted.specs[feature], held_out(store, feature)
    )
    assert score.senses_named, score
