"""Settings choose the reasoner: the LLM one when a server is configured, else rules."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.llm_reasoner import LLMReasoner
from agent.rules.reasoner import RulesReasoner
from api.agent_runtime import make_reasoner
from api.redis_server import EmbeddedRedis
from api.settings import SettingsError, get_settings
from probes.evidence.store import EvidenceStore
from probes.planted import PlantedFeatures


def test_settings_choose_the_reasoner(
    planted_evidence: tuple[EvidenceStore, PlantedFeatures],
    redis_server: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    store, _ = planted_evidence
    offline = get_settings(data_dir=str(tmp_path), redis_url=redis_server.url)
    assert isinstance(make_reasoner(offline, store), RulesReasoner)
    configured = get_settings(
        data_dir=str(tmp_path),
        redis_url=redis_server.url,
        llm_base_url="http://127.0.0.1:9/v1",
        llm_model="some-model",
        llm_api_key="sk-test",
    )
    reasoner = make_reasoner(configured, store)
    assert isinstance(reasoner, LLMReasoner) and reasoner.name == "openai"
    assert reasoner.client.config.model == "some-model"
    asyncio.run(reasoner.aclose())
    no_model = get_settings(data_dir=str(tmp_path), llm_base_url="http://127.0.0.1:9/v1")
    with pytest.raises(SettingsError, match="GLOSSATOR_LLM_MODEL"):
        make_reasoner(no_model, store)
