"""The LLM judge against llama.cpp (tests/llama_fixtures.py) serving the shipped
SmolLM2-135M GGUF: detection from real log-probabilities, generation under the grammar."""

from __future__ import annotations

import asyncio

from evals.core import Explained
from evals.judges import LLMJudge
from llm_client import LLMClient, LLMConfig
from tests.evals.test_llm_judge import example
from tests.llama_fixtures import LlamaServer

LOVE = Explained(feature=3, explainer="agent", text='The word "love" and its forms.')


def test_llm_judge_detects_and_generates_through_llama_cpp(llama_server: LlamaServer) -> None:
    config = LLMConfig(base_url=llama_server.base_url, model=llama_server.model, max_tokens=300)

    async def judge() -> tuple[list[float], list[str], LLMJudge]:
        async with LLMClient(config, cache=None) as client:
            judged = LLMJudge(client)
            texts = [example("I", " love", " you"), example("The", " table", " is", " red")]
            scores = await judged.detect(LOVE, texts)
            return scores, await judged.generate(LOVE, 2), judged

    scores, generated, judged = asyncio.run(judge())
    assert judged.uses_logprobs is True  # scored from the server's log-probabilities
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    assert len(generated) == 2 and all(t.strip() for t in generated)
