"""The LLM judge and the one-shot explainer against llama.cpp (tests/llama_fixtures.py)
serving the shipped SmolLM2-135M GGUF: detection and fuzzing from real
log-probabilities, simulation (by expected value where the reply lines up), generation
under the grammar, and one one-shot explanation. A 135M model judges badly; these tests
hold the replies of a real server to what the scorers need."""

from __future__ import annotations

import asyncio

from evals.core import Explained, Highlighted
from evals.explainers import OneShotExplainer
from evals.judges import LLMJudge
from evals.judges.llm_replies import SCALE, expected_value
from llm_client import LLMClient, LLMConfig
from probes.evidence.store import EvidenceStore
from probes.planted import PlantedFeatures
from tests.evals.test_llm_judge import example
from tests.llama_fixtures import LlamaServer
from tests.llm_client.test_llama_cpp import logprobs_reply

LOVE = Explained(feature=3, explainer="agent", text='The word "love" and its forms.')
LOVING = example("I", " love", " you")
TABLE = example("The", " table", " is", " red")


def config(server: LlamaServer) -> LLMConfig:
    return LLMConfig(base_url=server.base_url, model=server.model, max_tokens=300)


def test_llm_judge_detects_and_generates_through_llama_cpp(llama_server: LlamaServer) -> None:
    async def judge() -> tuple[list[float], list[str], LLMJudge]:
        async with LLMClient(config(llama_server), cache=None) as client:
            judged = LLMJudge(client)
            scores = await judged.detect(LOVE, [LOVING, TABLE])
            return scores, await judged.generate(LOVE, 2), judged

    scores, generated, judged = asyncio.run(judge())
    assert judged.uses_logprobs is True  # scored from the server's log-probabilities
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    assert len(generated) == 2 and all(t.strip() for t in generated)


def test_llm_judge_fuzzes_and_simulates_through_llama_cpp(llama_server: LlamaServer) -> None:
    marked = [
        Highlighted(example=LOVING, marked=[False, True, False]),
        Highlighted(example=TABLE, marked=[True, False, False, False]),
    ]

    async def judge() -> tuple[list[float], list[list[float]], LLMClient]:
        async with LLMClient(config(llama_server), cache=None) as client:
            judged = LLMJudge(client)
            fuzzed = await judged.fuzz(LOVE, marked)
            assert judged.uses_logprobs is True
            return fuzzed, await judged.simulate(LOVE, [LOVING, TABLE]), client

    fuzzed, simulated, client = asyncio.run(judge())
    assert len(fuzzed) == 2 and all(0.0 <= p <= 1.0 for p in fuzzed)
    # One value per token on the scale, whether read from the listing or, where the
    # model cannot write it (SmolLM2 cannot), from the JSON it is asked for next.
    assert [len(row) for row in simulated] == [3, 4]
    assert all(0.0 <= v <= SCALE for row in simulated for v in row)
    spent = client.usage_by_purpose
    assert spent["judge-fuzz"].calls >= 1 and spent["judge-simulate"].calls >= 2
    assert spent["judge-simulate"].input_tokens > 0  # the server's own counts


def test_expected_values_read_from_llama_cpp_log_probabilities(llama_server: LlamaServer) -> None:
    """Simulation reads the activation as the expected value over the digit tokens'
    probabilities: llama.cpp's top log-probabilities must carry the digits as tokens of
    their own, as the scorer reads them."""

    rating = "Rate how much you like rain, from 0 to 10."
    (first,) = logprobs_reply(llama_server, rating, top_logprobs=10, max_tokens=1).tokens
    digits = [t for t in first.top if t.strip().isdigit()]
    assert len(digits) >= 2, first.top  # a spread over several values, not one
    value = expected_value(first)
    assert value is not None and 0.0 <= value <= SCALE


def test_oneshot_explains_a_planted_feature_through_llama_cpp(
    llama_server: LlamaServer, planted_evidence: tuple[EvidenceStore, PlantedFeatures]
) -> None:
    store, planted = planted_evidence
    feature = planted.feature_index("word-love")

    async def explain() -> Explained:
        async with LLMClient(config(llama_server), cache=None) as client:
            return await OneShotExplainer(client).explain(feature, store.feature(feature))

    explained = asyncio.run(explain())
    assert explained.explainer == "oneshot" and explained.text.strip()
    assert explained.cost.llm_calls >= 1 and explained.cost.llm_tokens > 500  # long prompt
