"""Settings -> an agent run's dependencies: the evidence of the configured SAE (or of
planted features), the probe source, the reasoner, and what the explanations are of."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from agent.deps import AgentDeps
from agent.explanations import Subject
from agent.probe import ProbeRunner
from agent.reasoner import Reasoner
from agent.rules.pool import retrieval_pool
from agent.rules.reasoner import RulesReasoner
from api import runtime
from api.evidence import evidence_folder, fingerprint, open_store, planted_spec_path
from api.settings import Settings, SettingsError
from probes.evidence.store import EvidenceStore


@dataclass
class AgentSetup:
    deps: AgentDeps
    subject: Subject
    feature_names: list[str] | None  # planted ids; None for SAE features (named by index)


def agent_setup(settings: Settings, planted: bool, spec: Path | None = None) -> AgentSetup:
    """The latest evidence of the configured source, with its probe source and the
    reasoner the settings choose (`make_reasoner`)."""
    store = open_store(settings, evidence_folder(settings, None, spec, planted))
    if planted:
        from probes.planted import PlantedFeatures

        spec_path = planted_spec_path(spec)
        source = PlantedFeatures.from_file(spec_path, store.tokenizer)
        subject = Subject(
            model=store.manifest.source.get("tokenizer", "planted"),
            sae=f"planted:{fingerprint(spec_path)}",
            hookpoint="planted",
        )
        names: list[str] | None = list(source.feature_names)
        probe = ProbeRunner(source)
    else:
        from probes.sae_runner import SAEFeatureSource

        subject_model = runtime.open_subject_model(settings)
        sae = runtime.open_sae(settings, subject_model)
        hookpoint = store.manifest.source.get("hookpoint") or runtime.sae_hookpoint(settings, sae)
        probe = ProbeRunner(
            SAEFeatureSource(subject_model, sae, hookpoint, context_length=settings.context_length)
        )
        subject = Subject(
            model=subject_model.name,
            sae=store.manifest.source.get("sae_hash", str(runtime.sae_path(settings))),
            hookpoint=hookpoint,
        )
        names = None
    return AgentSetup(AgentDeps(make_reasoner(settings, store), probe, store), subject, names)


def make_reasoner(settings: Settings, store: EvidenceStore) -> Reasoner:
    """The LLM reasoner when an OpenAI-compatible server is configured
    (GLOSSATOR_LLM_BASE_URL and GLOSSATOR_LLM_MODEL), else the offline rules reasoner.
    LLM replies are cached in Redis, so a rerun of the same request costs nothing."""
    if not settings.llm_base_url:
        return RulesReasoner(retrieval_pool(store))
    if not settings.llm_model:
        raise SettingsError(
            "GLOSSATOR_LLM_BASE_URL is set but GLOSSATOR_LLM_MODEL is not: name the model "
            "the server should run"
        )
    from agent.llm import LLMClient, LLMConfig
    from agent.llm_reasoner import LLMReasoner
    from api.redis_server import connect

    key = settings.llm_api_key or SecretStr("unused")
    config = LLMConfig(base_url=settings.llm_base_url, api_key=key, model=settings.llm_model)
    return LLMReasoner(LLMClient(config, cache=connect(settings)))
