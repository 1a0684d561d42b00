"""The benchmark runner, its Redis results, the report, and `glossator bench` end to end:
planted features on the real default corpus, real Redis, the predicate judge (offline)."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from evals.collisions import SCORER as COLLISION_SCORER
from evals.core import Explained, ExplainerCost
from evals.explainers.toptokens import TopTokensExplainer
from evals.floors import is_floor
from evals.judges.predicate import PredicateJudge
from evals.report import summarize, write_report
from evals.results import BenchConfig, BenchResults, BenchRunMismatch
from evals.runner import Bench, run_bench
from evals.scorers.detection import DetectionScorer
from evals.scorers.simulation import SimulationScorer
from probes.evidence.store import EvidenceStore, FeatureEvidence
from probes.planted import PlantedFeatures
from runtime.redis_server import EmbeddedRedis
from tests.cli_helpers import bench_cli_env, run_cli

pytestmark = pytest.mark.slow  # `glossator bench` processes on the real default model

Planted = tuple[EvidenceStore, PlantedFeatures]
NAMES = ["digits", "word-love", "question-mark"]


@dataclass
class Counting:
    """Top tokens, counting its calls (to see what a resumed run does again)."""

    inner: TopTokensExplainer
    name: str = "toptokens"
    calls: int = 0

    async def explain(self, feature: int, evidence: FeatureEvidence) -> Explained:
        self.calls += 1
        return await self.inner.explain(feature, evidence)


@dataclass
class Failing:
    name: str = "broken"

    async def explain(self, feature: int, evidence: FeatureEvidence) -> Explained:
        raise RuntimeError("the explainer's server is down")


@dataclass
class Wrong:
    """Explains every feature as question marks: right for one, wrong for the others."""

    name: str = "wrong"

    async def explain(self, feature: int, evidence: FeatureEvidence) -> Explained:
        predicate = {"kind": "token_regex", "pattern": r"\?+", "meaning": "question marks"}
        return Explained(
            feature=feature, explainer=self.name, text="Question marks.", predicate=predicate,
            cost=ExplainerCost(seconds=0.5),
        )  # fmt: skip


def config(run_id: str, features: list[int], explainers: list[str]) -> BenchConfig:
    return BenchConfig(
        run_id=run_id, source="planted", evidence_id="e", features=features,
        explainers=explainers, scorers=["detection", "simulation"], judges=["predicate"],
        per_quantile=2, non_activating=10, seed=0,
    )  # fmt: skip


@pytest.fixture
def client(redis_server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url)


def test_runner_scores_every_explainer_and_resumes(
    planted_evidence: Planted, client: redis.Redis, tmp_path: Path
) -> None:
    store, planted = planted_evidence
    features = [planted.feature_index(n) for n in NAMES]
    run_id = f"test-{random.Random().getrandbits(32):08x}"
    top = Counting(TopTokensExplainer())
    results = BenchResults(client, run_id)
    cfg = results.start(config(run_id, features, ["toptokens", "wrong", "broken"]))
    bench = Bench(
        cfg, store, [top, Wrong(), Failing()], [DetectionScorer(), SimulationScorer()],
        [PredicateJudge.for_store(store)], results,
    )  # fmt: skip
    asyncio.run(run_bench(bench))
    everything = results.scores()
    scores = [s for s in everything if not is_floor(s.explainer) and s.scorer in cfg.scorers]
    assert len(scores) == 2 * 2 * len(features)  # two explainers that worked x two scorers
    # Label collisions: "wrong" says the same of every feature, so each of its
    # explanations is scored against the others' contexts; top tokens differ.
    collided = {s.feature: s for s in everything if s.scorer == COLLISION_SCORER}
    assert {s.explainer for s in collided.values()} == {"wrong"}
    for f, s in collided.items():
        assert sorted(s.details["collides_with"]) == sorted(set(features) - {f})
    question = planted.feature_index("question-mark")
    digits = planted.feature_index("digits")
    against = {f: s.score for f, s in collided.items() if s.score is not None}
    assert against[digits] < 0.7 and against[question] > 0.8
    # Floors: each feature scored with another feature's explanation by the same
    # explainer (the broken one wrote none, so it has none).
    floors = [s for s in everything if is_floor(s.explainer)]
    assert {s.explainer for s in floors} == {"toptokens~floor", "wrong~floor"}
    assert len(floors) == 2 * 2 * len(features)
    own = {(s.scorer, s.feature): s.score or 0.0 for s in scores if s.explainer == "toptokens"}
    for s in floors:
        if s.explainer == "toptokens~floor" and s.scorer == "detection":
            assert s.score is not None and s.score < own[("detection", s.feature)] - 0.3
    assert all(s.score is not None and s.judge == "predicate" for s in scores)
    assert set(results.failures()) == {f"broken:{f}" for f in features}
    assert "server is down" in next(iter(results.failures().values()))
    by = {(s.explainer, s.scorer, s.feature): s.score or 0.0 for s in scores}
    assert by[("wrong", "detection", question)] > 0.8  # misses only tokens like '?"'
    assert by[("wrong", "detection", planted.feature_index("digits"))] < 0.7
    assert min(by[("toptokens", "detection", f)] for f in features) > 0.9

    # The same run again: nothing is explained or scored twice.
    asyncio.run(run_bench(bench))
    assert top.calls == len(features) and len(results.scores()) == len(everything)
    # Another config under the same run id is refused, not mixed in.
    with pytest.raises(BenchRunMismatch, match="another config"):
        results.start(config(run_id, features[:1], ["toptokens"]))

    summary = summarize(cfg, results.scores(), results.explanations(), results.failures())
    wrong = summary.paired.get("wrong") or {}
    assert not wrong  # no agent in this run: nothing to pair against
    cell = summary.cells["toptokens"]["detection"]
    assert cell.n == 3 and cell.mean is not None and cell.lo is not None and cell.hi is not None
    assert cell.lo <= cell.mean <= cell.hi
    assert summary.failures == {"toptokens": 0, "wrong": 0, "broken": 3}
    assert summary.cost["wrong"]["seconds"] == pytest.approx(0.5)
    assert summary.judges["toptokens"] == {"predicate": 6} and summary.judges["broken"] == {}
    floor = summary.floor["toptokens"]["detection"]
    assert floor.n == 3 and floor.mean is not None and cell.mean - floor.mean > 0.3
    densities = {f: store.feature(f).stats.density for f in features}
    report = write_report(
        tmp_path, cfg, results.scores(), results.explanations(), results.failures(), densities
    )
    text = report.read_text()
    assert "| toptokens |" in text and "| wrong |" in text and "![scores](scores.png)" in text
    assert (
        "## Floors" in text and f"floor {floor.mean:.3f}" in text and "| chance | 0.500 |" in text
    )
    assert "## Label collisions" in text and "| wrong | 3 of 3 |" in text
    assert summary.collisions["toptokens"].colliding == 0
    for png in ("scores.png", "density.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    document = json.loads((tmp_path / "results.json").read_text())
    row = document["results"][0]
    assert set(row) >= {"feature", "explainer", "scorer", "score", "explanation"}


@pytest.fixture(scope="module")
def cli_env(
    tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any, redis_server: EmbeddedRedis
) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bench-cli")
    return bench_cli_env(root, smollm2_tokenizer, redis_server.url, 400)


def test_bench_cli_runs_reports_and_rerenders(cli_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = [
        "bench", "--planted", "--features", "digits,word-love",
        "--explainers", "agent,toptokens",  # judges: auto, the predicate judge offline
        "--scorers", "detection,simulation,truth", "--max-rounds", "3", "--json", str(out),
    ]  # fmt: skip
    result = run_cli(*args, env=cli_env)
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    rows = document["results"]
    assert len(rows) == 2 * 2 * 3
    truth = {(r["explainer"], r["feature"]): r["score"] for r in rows if r["scorer"] == "truth"}
    assert min(truth.values()) > 0.9, truth
    assert "Paired differences against `agent`" in result.stdout
    assert "- agent: predicate 6" in result.stdout  # who judged
    run_id = document["config"]["run_id"]
    again = run_cli(*args, env=cli_env)  # resumes: same run id, nothing new
    assert again.returncode == 0 and run_id in again.stdout
    shown = run_cli("bench", "report", run_id, env=cli_env)
    assert shown.returncode == 0, shown.stderr
    assert "toptokens" in shown.stdout and run_id in shown.stdout
    listed = run_cli("bench", "list", env=cli_env)
    assert run_id in listed.stdout


def test_bench_cli_errors_say_what_to_fix(cli_env: dict[str, str]) -> None:
    bad = run_cli("bench", "--planted", "--scorers", "vibes", env=cli_env)
    assert bad.returncode == 2 and "unknown scorer vibes" in bad.stderr
    no_llm = run_cli(
        "bench", "--planted", "--features", "digits", "--explainers", "oneshot", env=cli_env
    )
    assert no_llm.returncode == 2 and "GLOSSATOR_LLM_BASE_URL" in no_llm.stderr
    missing = run_cli("bench", "report", "no-such-run", env=cli_env)
    assert missing.returncode == 2 and "no benchmark run" in missing.stderr
    planted_output = run_cli(
        "bench", "--planted", "--features", "digits", "--scorers", "output", env=cli_env
    )
    assert planted_output.returncode == 2 and "planted features have none" in planted_output.stderr


def test_bench_cli_scores_imported_explanations(cli_env: dict[str, str], tmp_path: Path) -> None:
    export = tmp_path / "neuronpedia.json"
    record = {"modelId": "smollm2", "layer": "planted", "index": "6"}  # 6: digits
    export.write_text(json.dumps([{**record, "description": "numbers written with digits"}]))
    out = tmp_path / "imported.json"
    result = run_cli(
        "bench", "--planted", "--features", "digits,word-love", "--explainers", "toptokens",
        "--neuronpedia", str(export), "--scorers", "embedding,detection", "--json", str(out),
        env=cli_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    mine = [r for r in document["results"] if r["explainer"] == "neuronpedia"]
    assert {(r["feature"], r["scorer"]) for r in mine} == {(6, "embedding"), (6, "detection")}
    by_scorer = {r["scorer"]: r for r in mine}
    assert by_scorer["embedding"]["score"] is not None  # no judge needed
    # Prose with no LLM judge configured: reported as unscored, with the reason.
    assert by_scorer["detection"]["score"] is None and "judge" in by_scorer["detection"]["error"]
    # The file explains digits only: word-love is a failure of that explainer, not a score.
    assert document["summary"]["failures"]["neuronpedia"] == 1
