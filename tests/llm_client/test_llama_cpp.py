"""The LLM path against a real server: llama.cpp (tests/llama_fixtures.py) serving the
shipped SmolLM2-135M GGUF. A 135M model cannot reason; these tests check what the client
and the reasoner make of a real, weak, grammar-constrained server."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.llm_reasoner import MAX_TEST_CHARS, LLMReasoner, _Experiments
from agent.state import AgentState, Expect, Hypothesis
from llm_client import LLMClient, LLMConfig
from tests.llama_fixtures import LlamaServer

DESIGN_ASK = [
    {
        "role": "user",
        "content": (
            "Hypothesis H1: the feature fires on the word love.\n"
            "Write short test texts: some where it should fire (high), some where it "
            "should not (low)."
        ),
    }
]


def _config(server: LlamaServer, **policy: Any) -> LLMConfig:
    return LLMConfig(base_url=server.base_url, model=server.model, max_tokens=400, **policy)


def test_the_default_json_mode_makes_llama_cpp_write_both_kinds_of_experiment(
    llama_server: LlamaServer,
) -> None:
    """Sent with the old default (json_object: any JSON object), this design call came
    back with one experiment and failed validation three times; under the schema, the
    grammar gives every reply at least one high and one low test within their bounds."""

    async def design() -> tuple[_Experiments, LLMClient]:
        async with LLMClient(_config(llama_server), cache=None) as client:
            return await client.complete_json(DESIGN_ASK, _Experiments, purpose="design"), client

    out, client = asyncio.run(design())
    assert client.json_mode == "json_schema"
    assert 1 <= len(out.high) <= 3 and 1 <= len(out.low) <= 3
    assert all(0 < len(text) <= MAX_TEST_CHARS for text in out.texts)
    assert client.usage.calls == 1 and client.usage.retries == 0
    assert client.usage.input_tokens > 0 and client.usage.output_tokens > 0  # real counts


def test_llama_cpp_sends_log_probabilities(llama_server: LlamaServer) -> None:
    async def ask() -> Any:
        async with LLMClient(_config(llama_server), cache=None) as client:
            return await client.complete_logprobs(
                [{"role": "user", "content": "Is the sky blue? Answer yes or no."}],
                purpose="judge",
                top_logprobs=5,
                max_tokens=2,
            )

    reply = asyncio.run(ask())
    assert reply.tokens and len(reply.tokens[0].top) == 5
    assert all(lp <= 0.0 for lp in reply.tokens[0].top.values())


def test_the_reasoner_designs_experiments_through_llama_cpp(llama_server: LlamaServer) -> None:
    """The reasoner's design step, its real prompt, through llama.cpp: both kinds."""
    hypothesis = Hypothesis(
        id="H1", statement='The word "love".', fires_on="love, loves", not_on="like, hate"
    )
    state = AgentState(feature=3, hypotheses=[hypothesis])

    async def design() -> list[Any]:
        async with LLMClient(_config(llama_server), cache=None) as client:
            return await LLMReasoner(client).design(state, hypothesis, None)  # type: ignore[arg-type]

    experiments = asyncio.run(design())
    kinds = {e.expect for e in experiments}
    assert kinds == {Expect.HIGH, Expect.LOW}
