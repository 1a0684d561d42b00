"""The LLM path against a real server: llama.cpp (tests/llama_fixtures.py) serving the
shipped SmolLM2-135M GGUF. A 135M model cannot reason; these tests check what the client
and the reasoner make of a real, weak, grammar-constrained server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from agent.llm_reasoner import LLMReasoner
from agent.llm_schemas import MAX_TEST_CHARS, _Experiments
from agent.state import AgentState, Expect, Hypothesis
from llm_client import LLMClient, LLMConfig, LLMOutputError, TextWithLogprobs
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


def logprobs_reply(
    server: LlamaServer, question: str, top_logprobs: int, max_tokens: int
) -> TextWithLogprobs:
    """llama.cpp's answer to `question`, with its top log-probabilities per token."""

    async def ask() -> TextWithLogprobs:
        async with LLMClient(_config(server), cache=None) as client:
            return await client.complete_logprobs(
                [{"role": "user", "content": question}],
                purpose="judge",
                top_logprobs=top_logprobs,
                max_tokens=max_tokens,
            )

    return asyncio.run(ask())


def test_llama_cpp_sends_log_probabilities(llama_server: LlamaServer) -> None:
    reply = logprobs_reply(llama_server, "Is the sky blue? Answer yes or no.", 5, 2)
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


def _unknown_type(schema: dict[str, Any]) -> None:
    schema["properties"]["colour"]["type"] = "colour-name"


class _Uncompilable(BaseModel):
    """A schema llama.cpp cannot turn into a grammar (an unknown type): it answers 400."""

    model_config = ConfigDict(json_schema_extra=_unknown_type)
    colour: str


class _Colour(BaseModel):
    colour: str


COLOUR_ASK = [{"role": "user", "content": 'The sky is blue. Reply {"colour": "blue"}.'}]


def test_a_schema_llama_cpp_refuses_steps_down_to_json_object_and_stays_there(
    llama_server: LlamaServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def ask() -> None:
        async with LLMClient(_config(llama_server), cache=None) as client:
            with contextlib.suppress(LLMOutputError):  # SmolLM2 may not write the key
                await client.complete_json(COLOUR_ASK, _Uncompilable, purpose="colour")
            assert client.json_mode == "json_object"
            with contextlib.suppress(LLMOutputError):
                await client.complete_json(COLOUR_ASK, _Colour, purpose="colour")
            assert client.json_mode == "json_object"  # kept: not tried and refused again

    with caplog.at_level(logging.WARNING, logger="llm_client.client"):
        asyncio.run(ask())
    logged = [r.getMessage() for r in caplog.records]
    refused = [m for m in logged if "refused response_format" in m]
    assert len(refused) == 1 and "HTTP 400" in refused[0] and "colour-name" in refused[0]


def test_without_response_format_llama_cpp_replies_are_still_held_to_the_schema(
    llama_server: LlamaServer,
) -> None:
    """json_mode off (for servers that refuse response_format): nothing constrains the
    reply, so the client parses and validates it, and re-asks; SmolLM2 then writes prose,
    and the call fails saying what to change."""

    async def ask() -> tuple[_Colour | LLMOutputError, LLMClient]:
        async with LLMClient(_config(llama_server, json_mode="off"), cache=None) as client:
            try:
                return await client.complete_json(COLOUR_ASK, _Colour, purpose="colour"), client
            except LLMOutputError as failed:
                return failed, client

    out, client = asyncio.run(ask())
    assert client.json_mode == "off"
    if isinstance(out, LLMOutputError):
        assert client.usage.calls == 1 + client.config.max_output_retries
        assert "no valid _Colour" in str(out) and "Try a stronger model" in str(out)
    else:
        assert out.colour.strip()
