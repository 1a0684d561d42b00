"""Settings -> an agent run's dependencies: the evidence of the configured SAE (or of
planted features), the probe source, the reasoner, and what the explanations are of."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import SecretStr

from agent.deps import AgentDeps
from agent.explanations import Subject
from agent.reasoner import Reasoner
from agent.rules.pool import retrieval_pool
from agent.rules.reasoner import RulesReasoner
from probes.evidence.store import EvidenceStore
from probes.probe_runner import ProbeRunner
from runtime import loaders
from runtime.evidence import evidence_folder, fingerprint, open_store, planted_spec_path
from runtime.settings import Settings, SettingsError

if TYPE_CHECKING:
    from llm_client import LLMClient, LLMConfig
    from llm_client.local import LocalTransport


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

        subject_model = loaders.open_subject_model(settings)
        sae = loaders.open_sae(settings, subject_model)
        hookpoint = store.manifest.source.get("hookpoint") or loaders.sae_hookpoint(settings, sae)
        probe = ProbeRunner(
            SAEFeatureSource(subject_model, sae, hookpoint, context_length=settings.context_length)
        )
        subject = Subject(
            model=subject_model.name,
            sae=store.manifest.source.get("sae_hash", str(loaders.sae_path(settings))),
            hookpoint=hookpoint,
        )
        names = None
    return AgentSetup(AgentDeps(make_reasoner(settings, store), probe, store), subject, names)


# The best offline backend as measured on planted features by
# benchmarks/offline_backends.py: rules, well ahead of the local SmolLM2-135M.
OFFLINE_DEFAULT: Literal["rules", "local"] = "rules"


def reasoner_choice(settings: Settings) -> str:
    """The backend the settings pick: GLOSSATOR_REASONER, where `auto` means openai when
    an LLM server is configured (GLOSSATOR_LLM_BASE_URL or _MODEL set), else the best
    offline backend."""
    if settings.reasoner != "auto":
        return settings.reasoner
    return "openai" if settings.llm_base_url or settings.llm_model else OFFLINE_DEFAULT


def make_reasoner(settings: Settings, store: EvidenceStore) -> Reasoner:
    """The reasoner `reasoner_choice` names. LLM replies (openai, local) are cached in
    Redis, so a rerun of the same request costs nothing. Raises SettingsError when the
    chosen backend is not configured well enough to run."""
    from agent.llm_reasoner import LLMReasoner

    choice = reasoner_choice(settings)
    if choice == "rules":
        from agent.rules.offload import Offload

        return RulesReasoner(retrieval_pool(store), offload=Offload(settings.synthesis_processes))
    if choice == "openai":
        return LLMReasoner(openai_client(settings), name="openai")
    return LLMReasoner(local_client(settings), name="local")


def llm_config(settings: Settings) -> LLMConfig:
    """The configured OpenAI-compatible server, as an LLMConfig; SettingsError says what
    to set when it is not configured."""
    from llm_client import LLMConfig

    if not settings.llm_base_url:
        if settings.reasoner == "openai" or settings.llm_model:
            explicit = settings.reasoner == "openai"
            why = "GLOSSATOR_REASONER=openai" if explicit else "GLOSSATOR_LLM_MODEL is set"
            why += " but GLOSSATOR_LLM_BASE_URL is not"
        else:
            why = "no LLM server is configured"
        raise SettingsError(
            f"{why}: set GLOSSATOR_LLM_BASE_URL to an OpenAI-compatible server (e.g. "
            "http://localhost:11434/v1) and GLOSSATOR_LLM_MODEL, or use "
            "GLOSSATOR_REASONER=rules or local"
        )
    if not settings.llm_model:
        raise SettingsError(
            "GLOSSATOR_LLM_BASE_URL is set but GLOSSATOR_LLM_MODEL is not: name the model "
            "the server should run"
        )
    return LLMConfig(
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key or SecretStr("unused"),
        model=settings.llm_model,
        timeout_s=settings.llm_timeout,
        concurrency=settings.llm_concurrency,
        max_tokens=settings.llm_max_tokens,
    )


def openai_client(settings: Settings) -> LLMClient:
    """A client of the configured OpenAI-compatible server, with the Redis reply cache."""
    from llm_client import LLMClient
    from runtime.redis_server import connect

    return LLMClient(llm_config(settings), cache=connect(settings))


def local_client(settings: Settings) -> LLMClient:
    """A client of the in-process chat model (GLOSSATOR_LOCAL_LLM, else the shipped
    SmolLM2-135M-Instruct), with the Redis reply cache. The weights load on first use."""
    from llm_client import LLMClient
    from llm_client.local import LocalModelError, LocalTransport, local_config
    from probes.model import prepare_default_model
    from runtime.redis_server import connect

    # Not subject_model_path: GLOSSATOR_MODEL may name a model that is no chat model.
    path = settings.local_llm or prepare_default_model(loaders.models_dir(settings))
    key = (Path(path), settings.device, settings.dtype)
    transport = _LOCAL_TRANSPORTS.get(key)
    if transport is None:
        try:
            transport = LocalTransport(path, device=settings.device, dtype=settings.dtype)
        except LocalModelError as err:
            where = "GLOSSATOR_LOCAL_LLM" if settings.local_llm else "the default local model"
            raise SettingsError(f"{where}: {err}") from err
        _LOCAL_TRANSPORTS[key] = transport
    return LLMClient(local_config(transport), cache=connect(settings), transport=transport)


# One copy of each local model per process: a service starting benchmark after benchmark
# (or agents, judges and one-shot explainers side by side) must not load it each time.
# A transport runs one generation at a time under a thread lock, from any event loop.
_LOCAL_TRANSPORTS: dict[tuple[Path, str, str], LocalTransport] = {}
