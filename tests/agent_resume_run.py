"""The real agent on the planted word-love feature with the LLM reasoner, checkpointed in
Redis, for the SIGKILL resume test. Run as

    python -m tests.agent_resume_run REDIS_URL THREAD EVIDENCE TOKENIZER BASE_URL API_KEY

It starts the run, or resumes it when the thread has a checkpoint (as `glossator
explain` does), then prints one JSON line: the final state, and how many texts this
process put through the probe runner.
"""

from __future__ import annotations

import asyncio
import json
import sys

from pydantic import SecretStr
from transformers import AutoTokenizer

from agent.checkpointer import async_redis_checkpointer
from agent.deps import AgentDeps
from agent.graph import build_graph
from agent.llm_reasoner import LLMReasoner
from agent.state import AgentState
from llm_client import LLMClient, LLMConfig
from probes.evidence.store import EvidenceStore
from probes.planted import PlantedFeatures, default_spec_path
from probes.probe_runner import ProbeRunner
from runtime.runs import drive


async def main(
    url: str, thread: str, evidence: str, tokenizer_dir: str, base_url: str, api_key: str
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    store = EvidenceStore(evidence, tokenizer)
    planted = PlantedFeatures.from_file(default_spec_path(), tokenizer)
    config = LLMConfig(base_url=base_url, api_key=SecretStr(api_key), model="fake-model")
    probe = ProbeRunner(planted)
    async with LLMClient(config, cache=None) as client, async_redis_checkpointer(url) as saver:
        deps = AgentDeps(LLMReasoner(client), probe, store)
        graph = build_graph(deps).compile(checkpointer=saver)
        start = AgentState(feature=planted.feature_index("word-love"))
        final = await drive(graph, start, thread, on_state=None)
        await probe.close()
    print(json.dumps({"state": final.model_dump(mode="json"), "probed": probe.texts_run}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
