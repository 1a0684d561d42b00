"""The agent's output side (agent/nodes/outputs.py with the rules reasoner), on the tiny
real Llama and a dictionary whose feature writes one token's unembedding direction: the
output claim it confirms must name that token, tested on texts it was not drawn from."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from typing import Any, cast

import pytest
import torch
from pydantic import SecretStr, ValidationError

from agent.deps import AgentDeps
from agent.llm_outputs import EXAMPLE_OUTPUT_CLAIMS, OutputClaimsOut
from agent.llm_reasoner import LLMReasoner
from agent.nodes.hypothesize import hypothesize
from agent.nodes.observe import NothingToExplainError, observe
from agent.nodes.outputs import TEXTS, outputs
from agent.rules.reasoner import RulesReasoner
from agent.state import AgentState, Cost, Explanation, Status
from llm_client import LLMClient, LLMConfig
from predicates.language import TokenView, from_dict
from predicates.output import names_token
from probes.evidence.store import EvidenceStore, FeatureEvidence, FeatureStatistics, TokenValue
from probes.probe_runner import ProbeRunner
from probes.sae_runner import SAEFeatureSource
from tests.evidence_helpers import example
from tests.llm_server import FakeLLMServer, Reply
from tests.steering_helpers import (
    TOKEN_FEATURE,
    last_layer,
    one_feature_sae,
    self_promoting_token,
    token_direction,
)

WORDS = ["red", " fox", " and", " the", " old", " dog", " went", " home", ".", " A", " cat"]


@pytest.fixture(scope="module")
def sharp_head(tiny_llama: Any) -> Any:
    """The tiny Llama with a 40x LM head: a random model's logits are nearly flat, so no
    direction would make any token twice as likely; a trained model's are not."""
    model = copy.deepcopy(tiny_llama.model)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)
    return dataclasses.replace(tiny_llama, model=model)


def evidence_of(token: str, token_id: int, max_act: float) -> FeatureEvidence:
    quiet = [example([f"Note {i}:", *WORDS[i % 5 : i % 5 + 5]], [0.0] * 6) for i in range(20)]
    stats = FeatureStatistics(
        fired_tokens=5, tokens=500, density=0.01, mean_act=max_act / 2, max_act=max_act,
        hist_counts=[5], hist_edges=[0.0, max_act],
    )  # fmt: skip
    return FeatureEvidence(
        feature=TOKEN_FEATURE, evidence_id="by-hand", stats=stats,
        top=[example(["The", " cat"], [0.0, max_act])], quantiles=[], non_activating=quiet,
        promoted=[TokenValue(token=token, token_id=token_id, value=1.0)], suppressed=[],
        similar=None,
    )  # fmt: skip


def deps_for(subject: Any, max_act: float, reasoner: Any = None) -> tuple[AgentDeps, str]:
    token_id = self_promoting_token(subject)
    hookpoint = last_layer(subject)
    sae = one_feature_sae(subject, hookpoint, token_direction(subject, token_id))
    runner = ProbeRunner(SAEFeatureSource(subject, sae, hookpoint))
    pool = [TokenView.of(WORDS)]
    # The evidence is built by hand and cached: the store is never read.
    reasoner = reasoner or RulesReasoner(pool, embed=None)
    deps = AgentDeps(reasoner, runner, cast(EvidenceStore, None))
    token = subject.tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
    deps._evidence[TOKEN_FEATURE] = evidence_of(token, token_id, max_act)
    return deps, token


def test_the_confirmed_output_claim_names_the_token_the_feature_writes(sharp_head: Any) -> None:
    deps, token = deps_for(sharp_head, max_act=20.0)
    state = AgentState(feature=TOKEN_FEATURE, threshold=1.0)
    update = asyncio.run(outputs(state, deps))
    first, second = update["output_tests"]
    assert (first.id, second.id) == ("S1", "S2")
    assert len(first.texts) == len(second.texts) == TEXTS
    assert not set(first.texts) & set(second.texts)  # judged on texts it was not drawn from
    assert first.promoted[0] == token and second.promoted[0] == token
    claims = [h for h in update["hypotheses"] if h.side == "output"]
    assert claims and all(h.decided_by == ["S2"] for h in claims)
    confirmed = [h for h in claims if h.status is Status.CONFIRMED]
    assert confirmed, [(h.statement, h.status) for h in claims]
    assert names_token(from_dict(confirmed[0].predicate or {}), token)
    assert confirmed[0].statement.startswith("Promotes")
    assert update["cost"].probe_texts == 2 * TEXTS


def test_a_feature_that_barely_moves_the_output_confirms_no_claim(tiny_llama: Any) -> None:
    deps, _ = deps_for(tiny_llama, max_act=0.01)  # flat logits, a tiny clamp
    update = asyncio.run(outputs(AgentState(feature=TOKEN_FEATURE, threshold=1.0), deps))
    assert all(t.promoted == [] for t in update["output_tests"])
    assert "hypotheses" not in update  # nothing promoted: no claim proposed


def test_the_explanation_states_both_sides() -> None:
    both = Explanation(
        feature=1, text="Fires on words for weather.", labels=[], evidence=[], confidence=0.5,
        cost=Cost(), stopped_by="decided", output_text='Promotes the token "umbrella".',
    )  # fmt: skip
    assert both.both_sides == (
        'Fires on words for weather; when it fires, it promotes the token "umbrella".'
    )
    alone = both.model_copy(update={"output_text": None})
    assert alone.both_sides == "Fires on words for weather."


def test_the_llm_reasoner_states_and_judges_an_output_claim_in_prose(sharp_head: Any) -> None:
    """Over real HTTP to a scripted OpenAI-compatible server: the claim is proposed from
    S1's promoted tokens and judged on S2's, each shown as delimited data."""
    with FakeLLMServer() as server:
        server.push(
            Reply.json({"claims": ["Promotes one rare word as the next token."]}),
            Reply.json({"holds": True, "reason": "That word heads the promoted tokens."}),
        )
        config = LLMConfig(base_url=server.base_url, api_key=SecretStr(server.api_key),
                           model="fake-model", timeout_s=5.0)  # fmt: skip

        async def main() -> dict[str, Any]:
            async with LLMClient(config) as client:
                deps, token = deps_for(sharp_head, 20.0, LLMReasoner(client))
                return {"token": token, **await outputs(AgentState(feature=TOKEN_FEATURE), deps)}

        update = asyncio.run(main())
    (claim,) = [h for h in update["hypotheses"] if h.side == "output"]
    assert claim.statement == "Promotes one rare word as the next token."
    assert claim.status is Status.CONFIRMED and claim.decided_by == ["S2"]
    assert claim.predicate is None  # prose: judged by the LLM, not run
    propose, judge = (str(b["messages"][1]["content"]) for b in server.requests)
    token = update["token"]
    assert f"<<<S1_promoted\n{token!r}" in propose and "<<<logit_lens" in propose
    assert "<<<claim\nPromotes one rare word" in judge and f"<<<S2_promoted\n{token!r}" in judge
    assert update["cost"].llm_calls == 2


def test_an_output_claim_that_names_nothing_is_refused() -> None:
    with pytest.raises(ValidationError, match="names nothing"):
        OutputClaimsOut.model_validate({"claims": ["Promotes"]})
    with pytest.raises(ValidationError, match="copied from the worked example"):
        OutputClaimsOut.model_validate({"claims": EXAMPLE_OUTPUT_CLAIMS.claims})
    assert OutputClaimsOut.model_validate({"claims": ["Promotes plural nouns."]}).claims


def test_a_feature_that_never_fired_in_the_explain_split_is_refused_with_why(
    tiny_llama: Any,
) -> None:
    deps, _ = deps_for(tiny_llama, max_act=1.0)
    silent = deps._evidence[TOKEN_FEATURE].model_copy(update={"top": [], "quantiles": []})
    deps._evidence[TOKEN_FEATURE] = silent
    state = AgentState(feature=TOKEN_FEATURE)
    for node in (observe, hypothesize):  # a run checkpointed past observe resumes at hypothesize
        with pytest.raises(NothingToExplainError, match="never in its explain split"):
            asyncio.run(node(state, deps))
