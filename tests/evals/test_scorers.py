"""Every scorer on planted features (real corpus, real tokenizer, real all-MiniLM-L6-v2),
judged by running predicates: the planted rule itself scores at the top, another
feature's rule at chance (balanced accuracy ~0.5, Pearson ~0, AUROC ~0.5, F1 and
generative success ~0), and a judge that cannot read an explanation yields no number."""

from __future__ import annotations

import asyncio
import re
from statistics import mean
from typing import Any

import pytest
from pydantic import SecretStr

from evals.core import Explained, Score, Scorer, scoring_set
from evals.judges.llm import LLMJudge
from evals.judges.predicate import PredicateJudge
from evals.scorers import (
    DetectionScorer,
    EmbeddingScorer,
    FuzzingScorer,
    GenerativeScorer,
    PredictiveScorer,
    SimulationScorer,
    TruthScorer,
)
from llm_client import LLMClient, LLMConfig, LLMUsage
from predicates.language import AnyOf, Predicate, TokenRegex, WordIn, as_dict
from probes.evidence.store import EvidenceStore
from probes.planted import PlantedFeatures, PlantedFeatureSpec, RegexRule, WordsRule
from probes.probe_runner import ProbeRunner
from tests.llm_server import FakeLLMServer, Reply

Planted = tuple[EvidenceStore, PlantedFeatures]


def words_of(planted: PlantedFeatures, name: str) -> WordIn:
    return word_in(planted.specs[planted.feature_index(name)].rule)


def word_in(rule: RegexRule | WordsRule) -> WordIn:
    """A planted word list as the predicate that fires exactly where it does."""
    assert isinstance(rule, WordsRule)
    cs = rule.case_sensitive
    return WordIn(words=tuple(w if cs else w.lower() for w in rule.words), case_sensitive=cs)


def planted_rules(planted: PlantedFeatures) -> dict[str, Predicate]:
    """The planted rules as predicates; each wrong explanation is the next one's rule
    (neighbours in this list fire on unrelated tokens)."""
    return {
        "word-love": words_of(planted, "word-love"),
        "colour-words": words_of(planted, "colour-words"),
        "digits": TokenRegex(pattern=r"\d+"),
        "question-mark": TokenRegex(pattern=r".*\?.*"),  # "?" may share a token
        "calendar-names": words_of(planted, "calendar-names"),
        "python-keywords": words_of(planted, "python-keywords"),
        "animal-words": words_of(planted, "animal-words"),
        "parentheses": TokenRegex(pattern=r".*[()].*"),
    }


EMBEDDED = ["word-love", "colour-words", "calendar-names", "animal-words"]


def explained(planted: PlantedFeatures, feature: str, rule: str, predicate: Predicate) -> Explained:
    """Feature `feature` explained by `rule`'s description and predicate."""
    return Explained(
        feature=planted.feature_index(feature),
        explainer="perfect" if rule == feature else "wrong",
        text=planted.specs[planted.feature_index(rule)].description,
        predicate=as_dict(predicate),
    )


Scores = dict[str, dict[str, tuple[Score, Score]]]  # scorer -> feature -> (perfect, wrong)


@pytest.fixture(scope="module")
def judge(planted_evidence: Planted) -> PredicateJudge:
    return PredicateJudge.for_store(planted_evidence[0])


@pytest.fixture(scope="module")
def scores(planted_evidence: Planted, judge: PredicateJudge) -> Scores:
    store, planted = planted_evidence
    rules = planted_rules(planted)
    names = list(rules)

    async def main() -> Scores:
        runner = ProbeRunner(planted)
        out: Scores = {}
        for i, name in enumerate(names):
            f = planted.feature_index(name)
            other = names[(i + 1) % len(names)]
            perfect = explained(planted, name, name, rules[name])
            wrong = explained(planted, name, other, rules[other])
            scorers = judged_scorers(runner, planted.specs[f])
            if name in EMBEDDED:
                scorers.append(EmbeddingScorer())
            examples = scoring_set(store, f)
            for scorer in scorers:
                pair = (
                    await scorer.score(perfect, examples, judge),
                    await scorer.score(wrong, examples, judge),
                )
                out.setdefault(scorer.name, {})[name] = pair
        await runner.close()
        return out

    return asyncio.run(main())


def judged_scorers(runner: ProbeRunner, spec: PlantedFeatureSpec) -> list[Scorer]:
    """Every scorer that needs a judge (all but embedding)."""
    return [
        DetectionScorer(),
        FuzzingScorer(),
        SimulationScorer(),
        PredictiveScorer(),
        GenerativeScorer(runner),
        TruthScorer(spec),
    ]


def values(scores: Scores, scorer: str) -> tuple[list[float], list[float]]:
    """The perfect and the wrong explanations' scores, each checked to be a real number
    with the scorer's and judge's names on it."""
    perfect: list[float] = []
    wrong: list[float] = []
    for pair in scores[scorer].values():
        for s, into in zip(pair, (perfect, wrong), strict=True):
            assert s.error is None and s.score is not None, s
            assert s.scorer == scorer and s.judge in ("predicate", "minilm")
            assert s.llm_calls == 0 and s.llm_tokens == 0
            into.append(s.score)
    return perfect, wrong


@pytest.mark.parametrize(
    ("scorer", "chance", "spread"),
    [
        ("detection", 0.5, 0.15),  # balanced accuracy
        ("fuzzing", 0.5, 0.15),  # balanced accuracy
        ("simulation", 0.0, 0.1),  # pooled Pearson over tokens
        ("predictive", 0.0, 0.2),  # pooled Pearson over the activating tokens
        ("generative", 0.0, 0.2),  # share of texts that fire
        ("truth", 0.0, 0.1),  # token-level F1
    ],
)
def test_the_planted_rule_scores_at_the_top_and_another_rule_at_chance(
    scores: Scores, scorer: str, chance: float, spread: float
) -> None:
    perfect, wrong = values(scores, scorer)
    assert min(perfect) >= 0.95, scores[scorer]
    assert all(abs(w - chance) <= spread for w in wrong), scores[scorer]
    assert abs(mean(wrong) - chance) <= 0.1, scores[scorer]


def test_detection_details(scores: Scores) -> None:
    perfect, wrong = scores["detection"]["digits"]
    assert perfect.details["f1"] == 1.0
    assert perfect.details["auc"] is None  # yes/no answers give no ranking
    assert perfect.details["n_activating"] == 20 and perfect.details["n_non_activating"] == 20
    # Activating examples come from every decile, and the rule finds them all.
    assert set(perfect.details["recall_by_quantile"].values()) == {1.0}
    assert len(perfect.details["recall_by_quantile"]) == 10
    assert wrong.details["f1"] < 0.7


def test_a_half_right_rule_scores_in_between(
    planted_evidence: Planted, judge: PredicateJudge, scores: Scores
) -> None:
    store, planted = planted_evidence
    colours = words_of(planted, "colour-words")
    half = colours.model_copy(update={"words": colours.words[::2]})  # every other colour
    half_explained = explained(planted, "colour-words", "colour-words", half)
    examples = scoring_set(store, planted.feature_index("colour-words"))
    spec = planted.specs[planted.feature_index("colour-words")]
    for scorer in (
        DetectionScorer(),
        FuzzingScorer(),
        SimulationScorer(),
        PredictiveScorer(),
        TruthScorer(spec),
    ):
        s = asyncio.run(scorer.score(half_explained, examples, judge))
        perfect, wrong = scores[scorer.name]["colour-words"]
        assert s.score is not None and perfect.score is not None and wrong.score is not None
        assert wrong.score + 0.15 < s.score < perfect.score - 0.1, (scorer.name, s)
        if scorer.name == "fuzzing":
            # Overlaps between 0 and 1: graded answers, so an AUC; yes/no gives none.
            assert s.details["auc"] is not None and perfect.details["auc"] is None


def test_generative_runs_the_texts_through_the_feature(scores: Scores) -> None:
    perfect, wrong = scores["generative"]["word-love"]
    assert perfect.probe_texts == 10 and perfect.details["successes"] == 10
    assert all("love" in t.lower() for t in perfect.details["texts"])
    assert all(m >= perfect.details["tau"] for m in perfect.details["max_acts"])
    assert wrong.probe_texts == 10 and wrong.details["successes"] == 0


def test_embedding_ranks_the_own_description_above_another(scores: Scores) -> None:
    perfect, wrong = values(scores, "embedding")
    assert all(p > w for p, w in zip(perfect, wrong, strict=True)), scores["embedding"]
    assert mean(perfect) >= 0.7 and abs(mean(wrong) - 0.5) <= 0.15, scores["embedding"]


def test_truth_names_each_sense_of_a_polysemantic_feature(
    planted_evidence: Planted, judge: PredicateJudge
) -> None:
    store, planted = planted_evidence
    name = "animals-or-time-units"
    f = planted.feature_index(name)
    spec = planted.specs[f]
    parts = tuple(word_in(s.rule) for s in spec.senses)
    examples = scoring_set(store, f)

    def score(predicate: Predicate) -> Score:
        return asyncio.run(
            TruthScorer(spec).score(explained(planted, name, name, predicate), examples, judge)
        )

    split, lumped = score(AnyOf(parts=parts)), score(WordIn(words=parts[0].words + parts[1].words))
    assert split.score == lumped.score == 1.0
    assert split.details["senses_named"] and not lumped.details["senses_named"]
    assert [s["sense"] for s in split.details["senses"]] == ["animals", "time-units"]


# -- failures are reported, never scored -------------------------------------------------


def test_prose_gets_no_score_from_the_predicate_judge(
    planted_evidence: Planted, judge: PredicateJudge
) -> None:
    store, planted = planted_evidence
    f = planted.feature_index("digits")
    prose = Explained(feature=f, explainer="oneshot", text="Numbers written with digits.")
    examples = scoring_set(store, f)
    assert not judge.can_judge(prose)

    async def main() -> list[Score]:
        runner = ProbeRunner(planted)
        judged = judged_scorers(runner, planted.specs[f])
        out = [await s.score(prose, examples, judge) for s in judged]
        await runner.close()
        return out

    for s in asyncio.run(main()):
        assert s.score is None and s.judge == "predicate", s
        assert s.error and "cannot judge" in s.error and "no predicate" in s.error, s.error
        assert s.probe_texts == 0


def test_a_malformed_predicate_or_set_fails_with_its_reason(
    planted_evidence: Planted, judge: PredicateJudge
) -> None:
    store, planted = planted_evidence
    f = planted.feature_index("digits")
    examples = scoring_set(store, f)
    broken = Explained(feature=f, explainer="x", text="t", predicate={"kind": "no-such-kind"})
    s = asyncio.run(SimulationScorer().score(broken, examples, judge))
    assert s.score is None and s.error and "ValidationError" in s.error, s
    quiet = examples.model_copy(update={"activating": [], "quantile_of": []})
    digits = explained(planted, "digits", "digits", TokenRegex(pattern=r"\d+"))
    s = asyncio.run(DetectionScorer().score(digits, quiet, judge))
    assert s.score is None and s.error and "needs both" in s.error, s


# -- with an LLM judge -------------------------------------------------------------------


def digits_llm(body: dict[str, Any]) -> Reply:
    """A scorer LLM that reads every explanation as "digits": JSON verdicts on numbered
    examples, JSON activations on a token listing (LLMJudge's text mode)."""
    ask = str(body["messages"][1]["content"])
    blocks = re.findall(r"<<<example_(\d+)\n(.*?)\nexample_\1>>>", ask, re.DOTALL)
    if blocks:
        verdicts = [{"example": int(i), "answer": bool(DIGIT.search(t))} for i, t in blocks]
        return Reply.json({"verdicts": verdicts})
    listing = re.search(r"<<<tokens\n(.*?)\ntokens>>>", ask, re.DOTALL)
    assert listing, ask
    rows = [line.split("\t", 1) for line in listing.group(1).split("\n")]
    return Reply.json({"activations": [[int(i), 10] for i, t in rows if DIGIT.search(t)]})


DIGIT = re.compile("[0-9]")


def test_llm_judged_scores_count_their_own_calls(planted_evidence: Planted) -> None:
    store, planted = planted_evidence
    digits, love = (planted.feature_index(n) for n in ("digits", "word-love"))
    prose = {f: Explained(feature=f, explainer="oneshot", text="Digits.") for f in (digits, love)}

    async def main(server: FakeLLMServer) -> tuple[list[Score], LLMUsage]:
        config = LLMConfig(
            base_url=server.base_url, api_key=SecretStr(server.api_key), model="fake-model"
        )
        async with LLMClient(config) as client:
            judge = LLMJudge(client, mode="text", batch_size=5)
            scored = await asyncio.gather(  # concurrent, as the runner scores features
                DetectionScorer().score(prose[digits], scoring_set(store, digits), judge),
                TruthScorer(planted.specs[digits]).score(
                    prose[digits], scoring_set(store, digits), judge
                ),
                DetectionScorer().score(prose[love], scoring_set(store, love), judge),
            )
            return list(scored), judge.usage

    with FakeLLMServer(responder=digits_llm) as server:
        (detect, truth, wrong), usage = asyncio.run(main(server))
    assert detect.judge == truth.judge == "llm:fake-model"
    assert detect.score == 1.0 and truth.score == 1.0, (detect, truth)
    assert wrong.score is not None and abs(wrong.score - 0.5) <= 0.15
    # 40 examples: 8 batches of 5 to detect, 40 simulations (one per example).
    assert (detect.llm_calls, truth.llm_calls, wrong.llm_calls) == (8, 40, 8)
    assert detect.llm_calls + truth.llm_calls + wrong.llm_calls == usage.calls
    assert sum(s.llm_tokens for s in (detect, truth, wrong)) == (
        usage.input_tokens + usage.output_tokens
    )


def test_generation_reads_past_the_pool_for_a_rare_word() -> None:
    """A word the pool's sample of contexts lacks is looked for in the lines beyond it,
    in their fixed order, and a second search finds the same lines again."""
    from predicates.language import TokenIn, TokenView, as_dict

    pool = [TokenView.of(["A", " plain", " line", " here"])] * 3
    beyond = (TokenView.of(["The", " congregation", f" sang {i}"]) for i in range(5))
    rare = PredicateJudge(pool, more=beyond)
    explained = Explained(
        feature=1, explainer="x", text="x", predicate=as_dict(TokenIn(words=("congregation",)))
    )
    first = asyncio.run(rare.generate(explained, 3))
    assert first == [f"The congregation sang {i}" for i in range(3)]
    assert asyncio.run(rare.generate(explained, 3)) == first
    assert len(asyncio.run(rare.generate(explained, 10))) == 5  # all there is
