"""Settings -> a benchmark: the evidence, the explainers, the scorers and the judges
that `glossator bench` names, and the agent run as an explainer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from agent.deps import AgentDeps
from agent.state import AgentState, Budget
from evals.core import Explained, Judge, Score, Scorer, ScoringSet
from evals.explainers.base import Explainer
from evals.runner import Bench
from identifiers.features import unknown_feature
from probes.evidence.store import EvidenceStore, FeatureEvidence
from probes.planted import PlantedFeatures
from runtime.agent import AgentSetup
from runtime.bench_corpus import score_corpus_store
from runtime.bench_options import (
    EXPLAINERS,
    JUDGES,
    OPT_IN,
    SCORERS,
    BenchOptionError,
    check_run_name,
    split_names,
)
from runtime.settings import Settings

RECURSION_LIMIT = 200  # graph steps per run; the budget stops rounds far earlier


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


def llm_client(settings: Settings, kind: str) -> Any:
    """The LLM client for `llm` (the configured OpenAI-compatible server) or `local`
    (the in-process chat model); the same clients and Redis cache the agent uses."""
    from runtime.agent import local_client, openai_client

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
    setup: AgentSetup,
    names: list[str],
    planted: PlantedFeatures | None,
    features: Sequence[int] = (),
    seed: int = 0,
) -> list[Scorer]:
    """`features`: the benchmark's; output-pick draws its distractors among those that
    fire (their steering is then shared), or among every firing feature when too few."""
    from evals.scorers.detection import DetectionScorer
    from evals.scorers.embedding import EmbeddingScorer
    from evals.scorers.fuzzing import FuzzingScorer
    from evals.scorers.generative import GenerativeScorer
    from evals.scorers.intruder import IntruderScorer
    from evals.scorers.output import OutputPickScorer, OutputScorer
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
        elif name in ("output", "output-pick"):
            if not setup.deps.probe.steers:
                raise BenchOptionError(
                    f"the {name} scorer steers the model with a feature's decoder direction; "
                    "planted features have none: bench an SAE's features"
                )
            store = setup.deps.store
            max_act_of = _max_act_of(store)
            if name == "output":
                made.append(OutputScorer(setup.deps.probe, max_act_of))
            else:
                made.append(OutputPickScorer(setup.deps.probe, max_act_of, store.firing_features()))
        elif name in ("intruder", "intruder-explained"):
            made.append(IntruderScorer(explained=name == "intruder-explained"))
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


def _distractors(store: EvidenceStore, features: Sequence[int]) -> list[int]:
    from evals.scorers.output import DISTRACTORS

    firing = [f for f in features if store.stats(f).max_act > 0]
    return firing if len(firing) > DISTRACTORS else store.firing_features()


def _max_act_of(store: EvidenceStore) -> Callable[[int], float]:
    """A feature's largest activation in the explain split (the scale steering clamps at)."""
    return lambda feature: store.stats(feature).max_act


def make_explainers(
    settings: Settings,
    setup: AgentSetup,
    names: list[str],
    budget: Budget,
    oneshot_llm: str,
    imported: dict[str, dict[int, Explained]],
) -> list[Explainer]:
    from evals.explainers.lens import LogitLensExplainer
    from evals.explainers.oneshot import OneShotExplainer
    from evals.explainers.toptokens import TokenStatsExplainer, TopTokensExplainer

    made: list[Explainer] = []
    for name in names:
        if name == "agent":
            made.append(AgentExplainer(setup.deps, budget))
        elif name == "oneshot":
            made.append(OneShotExplainer(llm_client(settings, oneshot_llm)))
        elif name == "tokenstats":
            made.append(TokenStatsExplainer())
        elif name == "logitlens":
            made.append(LogitLensExplainer())
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


class BenchOptions(BaseModel):
    """What defines a benchmark run besides its subject (the CLI's and the API's options)."""

    features: list[int]
    explainers: list[str] = Field(default_factory=lambda: ["agent", "toptokens"])
    scorers: list[str] = Field(default_factory=lambda: [s for s in SCORERS if s not in OPT_IN])
    judges: list[str] | None = None  # None: predicate, then llm when a server is configured
    per_quantile: int = Field(default=2, ge=1, le=50)
    non_activating: int = Field(default=20, ge=1, le=500)
    seed: int = 0
    max_rounds: int = Field(default=10, ge=1, le=50)
    oneshot_llm: str = "llm"
    # Score on this corpus (all of it held out) instead of the evidence's score split.
    score_corpus: Path | None = None
    run: str | None = None  # a name; default: derived from everything above

    @field_validator("run")
    @classmethod
    def _run_name(cls, value: str | None) -> str | None:
        return value if value is None else check_run_name(value)


def plan_bench(
    settings: Settings,
    setup: AgentSetup,
    options: BenchOptions,
    imported: dict[str, dict[int, Explained]] | None = None,
    concurrency: int = 4,
    on_chunk: Callable[[int, int], None] | None = None,
) -> Bench:
    """The benchmark `options` name, its config stored (or the stored one checked: the
    same run resumes). Raises BenchOptionError for what it cannot provide. With a score
    corpus, its evidence is built first (`on_chunk` sees that pass's progress)."""
    from evals.results import BenchConfig, BenchResults
    from evals.runner import Bench
    from runtime.redis_server import connect

    imported = imported or {}
    store = setup.deps.store
    explainers = _known(options.explainers, EXPLAINERS, "explainer")
    scorers = _known(options.scorers, SCORERS, "scorer")
    judges = options.judges or (["predicate", "llm"] if settings.llm_base_url else ["predicate"])
    judges = _known(judges, JUDGES, "judge")
    if not options.features:
        raise BenchOptionError("no features to score")
    if problem := unknown_feature(options.features, store.n_features):
        raise BenchOptionError(problem)
    budget = Budget(max_rounds=options.max_rounds)
    score_store = _score_store(settings, setup, options.score_corpus, on_chunk)
    scored_on = _scored_on(options.score_corpus, score_store)
    subject = setup.subject
    source = f"{subject.model} · {subject.sae} · {subject.hookpoint}"
    defining = {
        "source": source,
        "evidence": store.manifest.evidence_id,
        "features": options.features,
        "explainers": explainers + sorted(imported),
        "scorers": scorers,
        "judges": judges,
        "per_quantile": options.per_quantile,
        "non_activating": options.non_activating,
        "seed": options.seed,
        "budget": budget.model_dump(),
        "reasoner": setup.deps.reasoner.name,
        "oneshot_llm": options.oneshot_llm if "oneshot" in explainers else None,
        **scored_on,  # absent without a score corpus: older run ids stay as they were
    }
    run_id = options.run or run_id_for(defining)
    config = BenchConfig(
        run_id=run_id,
        source=source,
        evidence_id=store.manifest.evidence_id,
        features=options.features,
        feature_names=setup.feature_names,
        explainers=explainers + sorted(imported),
        scorers=scorers,
        judges=judges,
        per_quantile=options.per_quantile,
        non_activating=options.non_activating,
        seed=options.seed,
        score_corpus=scored_on.get("score_corpus"),
        score_evidence_id=scored_on.get("score_evidence_id"),
    )
    truth_source = setup.deps.probe.source
    planted = truth_source if isinstance(truth_source, PlantedFeatures) else None
    bench = Bench(
        config=config,
        store=store,
        explainers=make_explainers(
            settings, setup, explainers, budget, options.oneshot_llm, imported
        ),
        scorers=make_scorers(setup, scorers, planted, options.features, options.seed),
        judges=make_judges(settings, setup, judges),
        results=BenchResults(connect(settings), run_id),
        concurrency=concurrency,
        score_store=score_store,
    )
    bench.config = bench.results.start(config)
    return bench


def _score_store(
    settings: Settings,
    setup: AgentSetup,
    path: Path | None,
    on_chunk: Callable[[int, int], None] | None,
) -> EvidenceStore | None:
    if path is None:
        return None
    return score_corpus_store(settings, setup, path, on_chunk)


def _scored_on(path: Path | None, score_store: EvidenceStore | None) -> dict[str, str]:
    """What names the score corpus in a run's id and config: its path and its evidence
    (which hashes its texts, so an edited corpus is another run)."""
    if path is None or score_store is None:
        return {}
    return {
        "score_corpus": str(path.expanduser().resolve()),
        "score_evidence_id": score_store.manifest.evidence_id,
    }


def _known(names: list[str], known: tuple[str, ...], what: str) -> list[str]:
    return split_names(",".join(names), known, what)


def run_id_for(parts: dict[str, Any]) -> str:
    """A run's id from what defines it, so the same command resumes the same run."""
    digest = hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=6)
    return f"bench-{digest.hexdigest()}"


def bench_dir(settings: Settings, run_id: str) -> Path:
    """The run's report folder: always inside DATA_DIR/bench (the name is checked)."""
    return Path(settings.data_dir) / "bench" / check_run_name(run_id)
