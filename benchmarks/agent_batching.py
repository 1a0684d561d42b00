"""Probe batching across agent runs: N concurrent runs against the same N one after another.

Both passes explain the same features with the same deps (evidence store, rules reasoner,
feature source); each pass gets a fresh ProbeRunner, whose counters give the forward
calls and probe texts of that pass. Run concurrently, the runs' probe texts coalesce into
shared forwards; run one after another, every round of every run is a forward of its own.
The runs are deterministic, so both passes must reach the same explanation per feature
(checked, and printed as `same_explanations`).

The rules reasoner's work (synthesis, retrieval, analysis) is CPU work on the event loop,
so it never overlaps with another run's reasoning, only with forwards (which run in a
worker thread): `forward_seconds` is the time spent inside the feature source, and what
the wall time holds besides it is that serial reasoning.

Sources: the configured model + SAE (default) on the latest SAE evidence build, with
features drawn (seeded) among those that fire in the evidence; or `--planted`, the
shipped planted features on the latest planted evidence build.

    .venv/bin/python -m benchmarks.agent_batching [--planted] [--features 16]
        [--max-rounds 10] [--device cuda --dtype bfloat16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.deps import AgentDeps
from agent.graph import build_graph
from agent.reasoner import Reasoner
from agent.rules.pool import retrieval_pool
from agent.rules.reasoner import RulesReasoner
from agent.state import AgentState, Budget
from probes.activations import FeatureActivations, FeatureSource
from probes.evidence.config import EvidenceError
from probes.evidence.store import EvidenceStore
from probes.probe_runner import ProbeRunner
from runtime.evidence import evidence_folder, open_store
from runtime.settings import Settings, get_settings

RECURSION_LIMIT = 200  # graph steps per run; rounds stop far earlier (Budget.max_rounds)
WARMUP_TEXTS = ["The cat sat on the mat in 1984.", 'She said: "of course not", didn\'t she?']


@dataclass
class TimedSource:
    """A feature source that adds up the seconds spent in its forwards."""

    source: FeatureSource
    seconds: float = 0.0

    @property
    def feature_names(self) -> Sequence[str]:
        return self.source.feature_names

    def activations(self, texts: Sequence[str]) -> list[FeatureActivations]:
        start = time.perf_counter()
        try:
            return self.source.activations(texts)
        finally:
            self.seconds += time.perf_counter() - start


def open_evidence(settings: Settings, planted: bool) -> EvidenceStore:
    try:
        return open_store(settings, evidence_folder(settings, None, None, planted))
    except EvidenceError as error:
        how = (
            "glossator evidence build --planted"
            if planted
            else "glossator evidence build --max-tokens 30000"
        )
        raise SystemExit(f"{error}\nThis benchmark needs evidence: run `{how}` first.") from error


def sae_source(settings: Settings, store: EvidenceStore) -> tuple[FeatureSource, str]:
    """The configured model + SAE, read at the hookpoint the evidence was built at."""
    from probes.sae_runner import SAEFeatureSource
    from runtime import loaders

    subject = loaders.open_subject_model(settings)
    sae = loaders.open_sae(settings, subject).to(dtype=subject.dtype)
    hookpoint = loaders.sae_hookpoint(settings, sae, store.manifest.source.get("hookpoint"))
    source = SAEFeatureSource(subject, sae, hookpoint, context_length=settings.context_length)
    return source, f"{subject.name} {hookpoint} SAE d_sae={sae.d_sae} on {subject.device}"


def planted_source(store: EvidenceStore) -> tuple[FeatureSource, str]:
    from probes.planted import PlantedFeatures, default_spec_path

    planted = PlantedFeatures.from_file(default_spec_path(), store.tokenizer)
    return planted, f"planted features ({len(planted.feature_names)})"


def pick_features(store: EvidenceStore, n: int, seed: int) -> list[int]:
    """`n` features (seeded sample, sorted) that fire in the evidence, with explain-side
    top examples so that each run has a threshold."""
    fired = store.tensor("stats.count") > 0
    has_top = store.tensor("top.values")[:, 0] > 0
    alive = (fired & has_top).nonzero().flatten().tolist()
    if not alive:
        raise SystemExit(f"no feature fires in the evidence at {store.folder}")
    return sorted(random.Random(seed).sample(alive, min(n, len(alive))))


async def run_pass(
    source: FeatureSource,
    reasoner: Reasoner,
    store: EvidenceStore,
    states: list[AgentState],
    concurrent: bool,
) -> dict[str, Any]:
    """One pass over `states` with a fresh ProbeRunner: counters, seconds, final states."""
    timed = TimedSource(source)
    probe = ProbeRunner(timed)
    graph = build_graph(AgentDeps(reasoner, probe, store)).compile()
    config: Any = {"recursion_limit": RECURSION_LIMIT}
    start = time.perf_counter()
    try:
        if concurrent:
            outs = await asyncio.gather(*(graph.ainvoke(s, config) for s in states))
        else:
            outs = [await graph.ainvoke(s, config) for s in states]
    finally:
        await probe.close()
    wall = time.perf_counter() - start
    finals = [AgentState.model_validate(o) for o in outs]
    return {
        "forward_calls": probe.forward_calls,
        "probe_texts": probe.texts_run,
        "rounds": sum(s.round for s in finals),
        "wall_seconds": round(wall, 3),
        "forward_seconds": round(timed.seconds, 3),
        "forward_calls_per_run": round(probe.forward_calls / len(states), 2),
        "states": finals,
    }


def explanation_text(state: AgentState) -> str | None:
    return state.explanation.text if state.explanation is not None else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planted", action="store_true", help="planted features, not the SAE")
    parser.add_argument("--features", type=int, default=16, help="runs per pass (N)")
    parser.add_argument("--max-rounds", type=int, default=10)
    parser.add_argument("--pool-contexts", type=int, default=1500, help="retrieval pool size")
    parser.add_argument("--seed", type=int, default=0, help="which features are drawn")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    args = parser.parse_args()
    if args.features < 1 or args.max_rounds < 1:
        parser.error("--features and --max-rounds must be at least 1")

    overrides = {k: v for k, v in {"device": args.device, "dtype": args.dtype}.items() if v}
    settings = get_settings(**overrides)
    store = open_evidence(settings, args.planted)
    source, described = planted_source(store) if args.planted else sae_source(settings, store)
    features = pick_features(store, args.features, args.seed)
    reasoner = RulesReasoner(retrieval_pool(store, args.pool_contexts))
    source.activations(WARMUP_TEXTS)  # first forward: allocator and kernel warm-up
    for feature in features:  # first read of each feature's evidence rows
        store.feature(feature, non_activating=50)

    def states() -> list[AgentState]:
        budget = Budget(max_rounds=args.max_rounds)
        return [AgentState(feature=f, budget=budget) for f in features]

    passes: dict[str, dict[str, Any]] = {}
    for name, concurrent in (("concurrent", True), ("sequential", False)):
        print(f"{name} pass: {len(features)} runs ...", file=sys.stderr, flush=True)
        passes[name] = asyncio.run(run_pass(source, reasoner, store, states(), concurrent))
    together, apart = passes["concurrent"], passes["sequential"]
    texts = [explanation_text(s) for s in together.pop("states")]
    texts_apart = [explanation_text(s) for s in apart.pop("states")]
    pairs = zip(features, texts, texts_apart, strict=True)
    mismatched = [f for f, mine, theirs in pairs if mine is None or mine != theirs]
    result = {
        "source": described,
        "evidence_id": store.manifest.evidence_id,
        "runs": len(features),
        "max_rounds": args.max_rounds,
        "features": features,
        "concurrent": together,
        "sequential": apart,
        "wall_ratio_sequential_over_concurrent": round(
            apart["wall_seconds"] / together["wall_seconds"], 2
        ),
        "forward_ratio_sequential_over_concurrent": round(
            apart["forward_calls"] / together["forward_calls"], 2
        ),
        "same_explanations": not mismatched,
        "mismatched_features": mismatched,
        "explanations": {str(f): t for f, t in zip(features, texts, strict=True)},
    }
    print(json.dumps(result, indent=2))
    if mismatched:
        raise SystemExit(f"explanations differ between the passes for features {mismatched}")


if __name__ == "__main__":
    main()
