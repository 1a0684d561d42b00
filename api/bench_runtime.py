"""Settings -> a benchmark: the evidence, the explainers, the scorers and the judges
that `glossator bench` names, and the agent run as an explainer."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.deps import AgentDeps
from agent.state import AgentState, Budget
from api.agent_runtime import AgentSetup
from api.settings import Settings
from evals.core import Explained, Judge, Score, Scorer, ScoringSet
from evals.explainers.base import Explainer
from probes.evidence.store import FeatureEvidence
from probes.planted import PlantedFeatures

EXPLAINERS = ("agent", "oneshot", "toptokens")
SCORERS = ("detection", "fuzzing", "simulation", "embedding", "generative", "predictive", "truth")
JUDGES = ("predicate", "llm", "local")
RECURSION_LIMIT = 200  # graph steps per run; the budget stops rounds far earlier


class BenchOptionError(ValueError):
    """An explainer, scorer or judge the benchmark cannot provide, with what to do."""


@dataclass
class AgentExplainer:
    """The agent itself as an explainer: one full run (the settings' reasoner) per
    feature, in this process, sharing the probe runner with concurrent runs."""

    deps: AgentDeps
    budget: Budget
    name: str = "agent"
    _graph: Any = field(default=None, init=False, repr=False)

    async def explain(self, feature: int, evidence: FeatureEvidence) -> Explained:
        from agent.graph import build_graph
        from evals.explainers.agent import from_explanation

        if self._graph is None:
            self._graph = build_graph(self.deps).compile()
        start = AgentState(feature=feature, budget=self.budget)
        out = await self._graph.ainvoke(start, {"recursion_limit": RECURSION_LIMIT})
        state = AgentState.model_validate(out)
        if state.explanation is None:
            raise RuntimeError(f"the agent run on feature {feature} concluded nothing")
        return from_explanation(state.explanation, self.name)


@dataclass
class PlantedTruth:
    """The truth scorer for every planted feature (each has its own rule)."""

    planted: PlantedFeatures
    name: str = "truth"

    async def score(self, explained: Explained, examples: ScoringSet, judge: Judge) -> Score:
        from evals.scorers.truth import TruthScorer

        spec = self.planted.specs[explained.feature]
        return await TruthScorer(spec).score(explained, examples, judge)


def split_names(value: str, known: tuple[str, ...], what: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise BenchOptionError(
            f"unknown {what} {', '.join(unknown) or '(none given)'}: choose from {', '.join(known)}"
        )
    return list(dict.fromkeys(names))


def llm_client(settings: Settings, kind: str) -> Any:
    """The LLM client for `llm` (the configured OpenAI-compatible server) or `local`
    (the in-process chat model); the same clients and Redis cache the agent uses."""
    from api.agent_runtime import local_client, openai_client

    if kind == "local":
        return local_client(settings)
    if not settings.llm_base_url:
        raise BenchOptionError(
            "the `llm` judge and the oneshot explainer need an LLM: set GLOSSATOR_LLM_BASE_URL "
            "and GLOSSATOR_LLM_MODEL, or use --judges predicate,local and --oneshot-llm local"
        )
    return openai_client(settings)


def make_judges(settings: Settings, setup: AgentSetup, names: list[str]) -> list[Judge]:
    from evals.judges.llm import LLMJudge
    from evals.judges.predicate import PredicateJudge

    judges: list[Judge] = []
    for name in names:
        if name == "predicate":
            judges.append(PredicateJudge.for_store(setup.deps.store))
        else:
            client = llm_client(settings, name)
            # In process on a CPU, log-probability simulation is far too slow (see LLMJudge).
            judges.append(LLMJudge(client, simulate_with_logprobs=name != "local"))
    return judges


def make_scorers(
    setup: AgentSetup, names: list[str], planted: PlantedFeatures | None
) -> list[Scorer]:
    from evals.scorers.detection import DetectionScorer
    from evals.scorers.embedding import EmbeddingScorer
    from evals.scorers.fuzzing import FuzzingScorer
    from evals.scorers.generative import GenerativeScorer
    from evals.scorers.predictive import PredictiveScorer
    from evals.scorers.simulation import SimulationScorer

    made: list[Scorer] = []
    for name in names:
        if name == "truth":
            if planted is None:
                raise BenchOptionError("the truth scorer needs planted features: add --planted")
            made.append(PlantedTruth(planted))
        elif name == "generative":
            made.append(GenerativeScorer(setup.deps.probe))
        else:
            kinds: dict[str, Any] = {
                "detection": DetectionScorer,
                "fuzzing": FuzzingScorer,
                "simulation": SimulationScorer,
                "embedding": EmbeddingScorer,
                "predictive": PredictiveScorer,
            }
            made.append(kinds[name]())
    return made


def make_explainers(
    settings: Settings,
    setup: AgentSetup,
    names: list[str],
    budget: Budget,
    oneshot_llm: str,
    imported: dict[str, dict[int, Explained]],
) -> list[Explainer]:
    from evals.explainers.oneshot import OneShotExplainer
    from evals.explainers.toptokens import TopTokensExplainer

    made: list[Explainer] = []
    for name in names:
        if name == "agent":
            made.append(AgentExplainer(setup.deps, budget))
        elif name == "oneshot":
            made.append(OneShotExplainer(llm_client(settings, oneshot_llm)))
        else:
            made.append(TopTokensExplainer())
    made += [ImportedExplainer(name, found) for name, found in imported.items()]
    return made


@dataclass
class ImportedExplainer:
    """Explanations read from files (Neuronpedia, delphi): nothing to run."""

    name: str
    found: dict[int, Explained]

    async def explain(self, feature: int, evidence: FeatureEvidence) -> Explained:
        if feature not in self.found:
            raise LookupError(f"the {self.name} file has no explanation of feature {feature}")
        return self.found[feature].model_copy(update={"explainer": self.name})


def run_id_for(parts: dict[str, Any]) -> str:
    """A run's id from what defines it, so the same command resumes the same run."""
    digest = hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=6)
    return f"bench-{digest.hexdigest()}"


def bench_dir(settings: Settings, run_id: str) -> Path:
    return Path(settings.data_dir) / "bench" / run_id
