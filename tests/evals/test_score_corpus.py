"""`glossator bench --score-corpus PATH`: scoring examples drawn from another corpus (all
of it held out) while tau and the explanations come from the bench's own evidence.
Real parts: planted features on the real default corpus and SmolLM2's tokenizer, a tiny
real Llama with an SAE, real Redis, the CLI as a subprocess."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest
import redis
import torch
from safetensors.torch import load_file

from evals.core import scoring_set
from evals.explainers.toptokens import TopTokensExplainer
from evals.judges.predicate import PredicateJudge
from evals.report import summarize
from evals.results import BenchConfig, BenchResults
from evals.runner import Bench, run_bench
from evals.scorers.detection import DetectionScorer
from evals.scorers.simulation import SimulationScorer
from probes.evidence.build import build_evidence
from probes.evidence.config import EXPLAIN, SCORE, EvidenceConfig
from probes.evidence.sources import SourceChunkReader
from probes.evidence.store import EvidenceStore
from probes.planted import PlantedFeatures
from runtime.redis_server import EmbeddedRedis
from sae.loading import save_sae
from tests.cli_helpers import bench_cli_env, run_cli
from tests.sae_helpers import identity_sae

pytestmark = pytest.mark.slow  # `glossator bench --score-corpus` processes

Planted = tuple[EvidenceStore, PlantedFeatures]
QUIET = ["the river runs slowly to the hills.", "two cats sat on a warm mat.", "it rained."]


def score_texts(n: int = 90) -> list[str]:
    """Digits and question marks, never a form of "love"; some texts with neither."""
    rng = random.Random(7)
    return [
        rng.choice(QUIET) if i % 3 == 0 else f"Was it {rng.randint(10, 9999)} miles? {QUIET[i % 3]}"
        for i in range(n)
    ]


@pytest.fixture
def client(redis_server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url)


@pytest.fixture(scope="module")
def score_store(
    planted_evidence: Planted, smollm2_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory
) -> EvidenceStore:
    _, planted = planted_evidence
    folder = tmp_path_factory.mktemp("score-evidence")
    reader = SourceChunkReader(planted, smollm2_tokenizer)
    config = EvidenceConfig(score_fraction=1.0)
    build_evidence(reader, score_texts(), folder, {"kind": "planted"}, config)
    return EvidenceStore(folder, smollm2_tokenizer)


def test_a_score_fraction_of_one_holds_out_every_text(score_store: EvidenceStore) -> None:
    manifest = score_store.manifest
    assert manifest.n_contexts_per_split[EXPLAIN] == 0
    assert manifest.n_contexts_per_split[SCORE] == manifest.n_contexts > 0
    assert score_store.contexts_in_split(EXPLAIN).numel() == 0


def test_scoring_examples_come_from_the_score_corpus_and_tau_from_the_evidence(
    planted_evidence: Planted, score_store: EvidenceStore
) -> None:
    store, planted = planted_evidence
    digits = planted.feature_index("digits")
    own = scoring_set(store, digits, per_quantile=2, non_activating=10)
    held = scoring_set(store, digits, per_quantile=2, non_activating=10, held_out=score_store)
    assert own.evidence_id == store.manifest.evidence_id
    assert held.evidence_id == score_store.manifest.evidence_id != own.evidence_id
    assert held.threshold == own.threshold > 0  # tau: the explain side of the bench evidence
    texts = score_texts()
    assert held.activating and held.non_activating
    for example in held.examples:
        assert any(example.text in t for t in texts), example.text
    assert all(any(ch.isdigit() for ch in e.text) for e in held.activating)


def test_bench_on_a_score_corpus_reports_features_it_never_fires_on(
    planted_evidence: Planted, score_store: EvidenceStore, client: redis.Redis
) -> None:
    store, planted = planted_evidence
    names = ["digits", "word-love", "question-mark"]
    features = [planted.feature_index(n) for n in names]
    love = planted.feature_index("word-love")
    run_id = f"test-{random.Random().getrandbits(32):08x}"
    results = BenchResults(client, run_id)
    config = BenchConfig(
        run_id=run_id, source="planted", evidence_id=store.manifest.evidence_id,
        features=features, explainers=["toptokens"], scorers=["detection", "simulation"],
        judges=["predicate"], per_quantile=2, non_activating=10, seed=0,
        score_corpus="/corpora/numbers", score_evidence_id=score_store.manifest.evidence_id,
    )  # fmt: skip
    bench = Bench(
        results.start(config), store, [TopTokensExplainer()],
        [DetectionScorer(), SimulationScorer()], [PredicateJudge.for_store(store)], results,
        score_store=score_store,
    )  # fmt: skip
    asyncio.run(run_bench(bench))

    by = {(s.scorer, s.feature): s for s in results.scores()}
    assert len(by) == 2 * 3  # every feature has its scores, scored or not
    for scorer in ("detection", "simulation"):
        unscored = by[(scorer, love)]
        assert unscored.score is None and unscored.error is not None
        assert "never fires in the score corpus /corpora/numbers" in unscored.error
        assert f"feature {love}" in unscored.error
    assert results.explanation("toptokens", love) is None  # nothing spent on it
    assert not results.failures()
    for name in ("digits", "question-mark"):
        detection = by[("detection", planted.feature_index(name))]
        assert detection.score is not None and detection.score > 0.9, detection

    summary = summarize(config, results.scores(), results.explanations(), results.failures())
    assert "score corpus /corpora/numbers" in summary.scored_on
    assert score_store.manifest.evidence_id in summary.scored_on
    (reason,) = summary.unscored_reasons
    assert reason.startswith("the feature never fires in the score corpus")
    assert summary.unscored_reasons[reason] == 2
    assert summary.cells["toptokens"]["detection"].n == 2


# -- the CLI ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_env(
    tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any, redis_server: EmbeddedRedis
) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bench-score-corpus")
    return bench_cli_env(root, smollm2_tokenizer, redis_server.url, 300)


def _txt_folder(folder: Path, texts: list[str]) -> Path:
    """A folder of .txt files, one text each: another corpus layout than the evidence's."""
    folder.mkdir(parents=True)
    for i, text in enumerate(texts):
        (folder / f"{i:03d}.txt").write_text(text)
    return folder


def _latest(env: dict[str, str]) -> str:
    return (Path(env["GLOSSATOR_DATA_DIR"]) / "evidence" / "latest.json").read_text()


def test_bench_cli_scores_on_another_corpus(cli_env: dict[str, str], tmp_path: Path) -> None:
    corpus = _txt_folder(tmp_path / "numbers", score_texts(40))
    latest = _latest(cli_env)
    base = [
        "bench", "--planted", "--features", "digits,word-love", "--explainers", "toptokens",
        "--scorers", "detection,truth",
    ]  # fmt: skip
    out = tmp_path / "scored.json"
    result = run_cli(*base, "--score-corpus", str(corpus), "--json", str(out), env=cli_env)
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    config = document["config"]
    assert config["score_corpus"] == str(corpus.resolve())
    score_id = config["score_evidence_id"]
    assert score_id and score_id != config["evidence_id"]
    folder = Path(cli_env["GLOSSATOR_DATA_DIR"]) / "evidence" / score_id
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["config"]["score_fraction"] == 1.0 and manifest["n_texts"] == 40
    assert manifest["n_contexts_per_split"][0] == 0
    main = json.loads(
        (folder.parent / config["evidence_id"] / "manifest.json").read_text()
    )  # same source, so the same feature ids
    assert manifest["source"] == main["source"]
    assert _latest(cli_env) == latest  # `glossator explain` still reads the bench's evidence

    rows = {(r["feature"], r["scorer"]): r for r in document["results"]}
    digits, love = 6, next(f for f, _ in rows if f != 6)
    assert rows[(digits, "truth")]["score"] > 0.9
    assert rows[(digits, "detection")]["score"] > 0.9
    for scorer in ("detection", "truth"):
        row = rows[(love, scorer)]
        assert row["score"] is None and "never fires in the score corpus" in row["error"]
    assert f"from the score corpus {corpus.resolve()}" in result.stdout
    assert score_id in result.stdout

    # The same options without the score corpus: another run, never mixed with this one.
    plain_out = tmp_path / "plain.json"
    plain = run_cli(*base, "--json", str(plain_out), env=cli_env)
    assert plain.returncode == 0, plain.stderr
    plain_doc = json.loads(plain_out.read_text())
    assert plain_doc["config"]["run_id"] != config["run_id"]
    assert plain_doc["config"]["score_corpus"] is None
    assert all(r["error"] is None for r in plain_doc["results"])
    assert "held-out score split of evidence" in plain.stdout

    again = run_cli(*base, "--score-corpus", str(corpus), env=cli_env)  # resumes, reuses
    assert again.returncode == 0 and config["run_id"] in again.stdout


def test_bench_cli_score_corpus_errors_are_clear(cli_env: dict[str, str], tmp_path: Path) -> None:
    base = ["bench", "--planted", "--features", "digits", "--explainers", "toptokens"]
    missing = run_cli(*base, "--score-corpus", str(tmp_path / "nowhere"), env=cli_env)
    assert missing.returncode == 2, missing.stderr
    assert "score corpus" in missing.stderr and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{not json\n')
    bad = run_cli(*base, "--score-corpus", str(broken), env=cli_env)
    assert bad.returncode == 2, bad.stderr
    assert "cannot read the score corpus" in bad.stderr and "invalid JSON" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_bench_cli_score_corpus_with_real_sae_features(
    tiny_llama_dir: Path, tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    from tests.cli.test_explain import PHRASES

    sae = identity_sae(32)  # the tiny model's d_model is 32
    with torch.no_grad():
        # Activations there are ~0.02 wide: each feature fires on a few tokens, so some
        # contexts stay quiet (detection needs both kinds).
        sae.b_enc.fill_(-0.03)
    save_sae(sae, tmp_path / "sae")
    env = {
        "GLOSSATOR_MODEL": str(tiny_llama_dir),
        "GLOSSATOR_SAE": str(tmp_path / "sae"),
        "GLOSSATOR_HOOKPOINT": "layers.1",
        "GLOSSATOR_DATA_DIR": str(tmp_path / "data"),
        "GLOSSATOR_DEVICE": "cpu",
        "GLOSSATOR_REDIS_URL": redis_server.url,
    }
    main = tmp_path / "main.jsonl"
    main.write_text("".join(json.dumps({"text": f"{p}, {i}."}) + "\n" for i, p in
                            enumerate(PHRASES * 3)))  # fmt: skip
    built = run_cli("evidence", "build", "--no-redis", "--corpus", str(main), env=env)
    assert built.returncode == 0, built.stderr
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"text": t}) + "\n" for t in score_texts(30)))
    out = tmp_path / "sae.json"
    args = ["bench", "--features", "0:8", "--explainers", "toptokens", "--scorers", "detection"]
    result = run_cli(*args, "--score-corpus", str(other), "--json", str(out), env=env)
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    score_id = document["config"]["score_evidence_id"]
    score_dir = tmp_path / "data" / "evidence" / score_id
    manifest = json.loads((score_dir / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "sae" and manifest["n_features"] == 64
    assert manifest["source"]["hookpoint"] == "layers.1" and manifest["n_texts"] == 30
    rows = {r["feature"]: r for r in document["results"]}
    assert sorted(rows) == list(range(8))
    assert sum(r["score"] is not None for r in rows.values()) >= 3, rows
    fired = load_file(score_dir / "features.safetensors")["stats.count"]
    silent = [f for f in rows if fired[f] == 0]
    for f, row in rows.items():
        never = row["error"] is not None and "never fires in the score corpus" in row["error"]
        assert never == (f in silent), row
