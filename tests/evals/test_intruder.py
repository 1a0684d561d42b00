"""The intruder scorer (delphi's intruder detection): planted features on a small real
evidence pass (the real default planted spec, the real SmolLM2 tokenizer), the predicate
judge, the LLM judge over real HTTP (tests/llm_server.py), and the bench runner on real
Redis. The planted rule finds the intruder in every round; a predicate that fires
nowhere guesses at chance; explanation-free scoring needs an LLM judge and is judged
once per feature however many explainers there are."""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from evals.core import Explained, Highlighted, Score, ScoringSet, scoring_set
from evals.floors import is_floor
from evals.judges.llm import LLMJudge
from evals.judges.predicate import PredicateJudge
from evals.results import BenchConfig, BenchResults
from evals.runner import Bench, run_bench
from evals.scorers import IntruderScorer
from evals.scorers.intruder import credit, intruder_rounds
from llm_client import DATA_NOTE, LLMClient, LLMConfig, LLMUsage
from predicates.language import Predicate, TokenIn, TokenRegex, WordIn, as_dict
from probes.evidence.build import build_evidence
from probes.evidence.config import SCORE, EvidenceConfig
from probes.evidence.sources import SourceChunkReader
from probes.evidence.store import EvidenceStore, Example, FeatureEvidence
from probes.planted import PlantedFeatures, WordsRule, default_spec_path
from runtime.redis_server import EmbeddedRedis
from tests.llm_server import FakeLLMServer, Reply, ScriptedToken

PHRASES = [
    "I love my dog and she loves me back.",
    "The sky was blue, the grass green and the door red.",
    'He said "hello there" at 10:42 (twice).',
    "Is it true? Why would it be?",
    "def __init__(self):\n    return None",
    "We met on Monday in March with three friends.",
    "GNU grep and the UNIX shell are not hard.",
    "The computer in the corner hums all night.",
]
CONFIG = EvidenceConfig(
    context_width=16, top_k=5, n_quantiles=5, explain_sample=10, score_sample=20,
    score_fraction=0.4, pool_size=60, seed=11,
)  # fmt: skip
ROUNDS = 5  # 4 per quantile x 5 quantiles = 20 activating examples, 4 a round


@dataclass
class Planted:
    store: EvidenceStore
    planted: PlantedFeatures
    texts: list[str]

    def f(self, name: str) -> int:
        return self.planted.feature_index(name)

    def words(self, name: str) -> WordIn:
        """The planted word list as the predicate that fires exactly where it does."""
        rule = self.planted.specs[self.f(name)].rule
        assert isinstance(rule, WordsRule)
        cs = rule.case_sensitive
        return WordIn(words=tuple(w if cs else w.lower() for w in rule.words), case_sensitive=cs)

    def scoring(self, name: str, seed: int = 0) -> ScoringSet:
        return scoring_set(self.store, self.f(name), per_quantile=4, seed=seed)


@pytest.fixture(scope="module")
def small(smollm2_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Planted:
    """Planted features on 300 texts of a few phrases each (about a second to build)."""
    planted = PlantedFeatures.from_file(default_spec_path(), smollm2_tokenizer)
    rng = random.Random(7)
    texts = [" ".join(rng.choice(PHRASES) for _ in range(rng.randint(1, 4))) for _ in range(300)]
    folder = tmp_path_factory.mktemp("intruder-evidence")
    build_evidence(SourceChunkReader(planted, smollm2_tokenizer), texts, folder, {}, CONFIG)
    return Planted(EvidenceStore(folder, smollm2_tokenizer), planted, texts)


def explained(feature: int, predicate: Predicate, explainer: str = "agent") -> Explained:
    return Explained(
        feature=feature, explainer=explainer, text="an explanation", predicate=as_dict(predicate)
    )


def run(scorer: IntruderScorer, e: Explained, examples: ScoringSet, judge: Any) -> Score:
    return asyncio.run(scorer.score(e, examples, judge))


# -- scoring sets -----------------------------------------------------------------------


def firing_features(small: Planted, example: Example) -> set[int]:
    """The planted features whose activations on the example's tokens are its acts."""
    truth = small.planted.activations([small.texts[example.text_index]])[0]
    window = slice(example.start, example.start + len(example.tokens))
    n = len(small.planted.feature_names)
    dense = truth.dense(list(range(n)))[window]
    return {g for g in range(n) if dense[:, g].tolist() == example.acts}


def test_scoring_sets_hold_intruders_of_other_features_drawn_with_the_seed(small: Planted) -> None:
    for name in ("word-love", "colour-words", "digits", "calendar-names"):
        f = small.f(name)
        examples = small.scoring(name)
        assert len(examples.activating) == 4 * ROUNDS
        assert len(examples.intruders) == ROUNDS  # one per 4 activating examples
        own = {e.context for e in examples.activating}
        sources = []
        for e in examples.intruders:
            assert small.store.context_split(e.context) == SCORE  # held out
            assert e.context not in own and any(a > 0 for a in e.acts)
            features = firing_features(small, e)
            assert features and f not in features, (name, e.text)  # another feature's acts
            sources.append(features)
        # One intruder per feature: no two intruders are the same feature's.
        assert all(not (a & b) for i, a in enumerate(sources) for b in sources[i + 1 :])
        assert small.scoring(name).intruders == examples.intruders  # same seed, same set
    seeds = [[e.context for e in small.scoring("word-love", seed=s).intruders] for s in range(4)]
    assert len({tuple(c) for c in seeds}) > 1  # another seed draws others
    none = scoring_set(small.store, small.f("digits"), per_quantile=4, intruders=0)
    assert none.intruders == []


def test_rounds_span_the_quantiles_and_hide_the_intruder_anywhere(small: Planted) -> None:
    examples = small.scoring("word-love")
    rounds, at = intruder_rounds(examples, 4, "0:1")
    assert [len(r) for r in rounds] == [5] * ROUNDS
    assert [r[i].example for r, i in zip(rounds, at, strict=True)] == examples.intruders
    members = [item.example for r, i in zip(rounds, at, strict=True) for j, item in
               enumerate(r) if j != i]  # fmt: skip
    assert sorted(e.context for e in members) == sorted(e.context for e in examples.activating)
    quantile = {e.context: q for e, q in zip(examples.activating, examples.quantile_of,
                                             strict=True)}  # fmt: skip
    for r, i in zip(rounds, at, strict=True):  # 4 of 5 quantiles, dealt by rank
        assert len({quantile[item.example.context] for j, item in enumerate(r) if j != i}) >= 3
        for item in r:  # each highlighted where its own feature fires
            assert item.marked == [a > 0 for a in item.example.acts] and any(item.marked)
    assert len(set(at)) > 1
    assert intruder_rounds(examples, 4, "0:1") == (rounds, at)


# -- the predicate judge ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "other"), [("word-love", "colour-words"),
                                             ("colour-words", "calendar-names")])  # fmt: skip
def test_the_planted_rule_finds_every_intruder_and_a_wrong_one_guesses(
    small: Planted, name: str, other: str
) -> None:
    judge = PredicateJudge()
    f = small.f(name)
    examples = small.scoring(name)
    scorer = IntruderScorer(explained=True)
    perfect = run(scorer, explained(f, small.words(name)), examples, judge)
    assert perfect.scorer == "intruder-explained" and perfect.judge == "predicate"
    assert perfect.score == 1.0, perfect
    assert perfect.details["found"] == [1.0] * ROUNDS
    assert perfect.details["chance"] == pytest.approx(0.2)
    assert (perfect.details["n_rounds"], perfect.details["k"]) == (ROUNDS, 4)
    # Fires nowhere: every item ties at F1 0, a guess among five in every round.
    nowhere = run(scorer, explained(f, TokenIn(words=("zyzzyva",))), examples, judge)
    assert nowhere.score == pytest.approx(0.2) and nowhere.details["p_intruder"] == 0.2
    # Another feature's rule: the feature's own items all miss it, so only an intruder of
    # that other feature stands out, and it agrees most: at most chance.
    wrong = run(scorer, explained(f, small.words(other)), examples, judge)
    assert wrong.score is not None and wrong.score <= 0.2 + 1e-9, wrong


def test_explanation_free_needs_an_llm_judge(small: Planted) -> None:
    f = small.f("word-love")
    s = run(IntruderScorer(explained=False), explained(f, small.words("word-love")),
            small.scoring("word-love"), PredicateJudge())  # fmt: skip
    assert s.scorer == "intruder" and s.score is None and s.details == {}
    assert s.error and "cannot judge" in s.error and "LLM judge" in s.error, s.error
    assert not PredicateJudge().can_judge(None)


def test_a_set_without_intruders_is_unscored_with_why(small: Planted) -> None:
    f = small.f("digits")
    examples = small.scoring("digits").model_copy(update={"intruders": []})
    s = run(IntruderScorer(explained=True), explained(f, TokenRegex(pattern=r"\d+")), examples,
            PredicateJudge())  # fmt: skip
    assert s.score is None and s.error and "0 intruders" in s.error, s


def test_ties_split_the_credit() -> None:
    assert credit([0.0, 1.0, 0.0], 1) == 1.0
    assert credit([0.5, 0.5, 0.0], 1) == 0.5
    assert credit([0.2] * 5, 3) == pytest.approx(0.2)
    assert credit([0.1, 0.7, 0.2], 2) == 0.0


# -- the LLM judge ----------------------------------------------------------------------


def example(*tokens: str, marked: str) -> Highlighted:
    """Tokens with those equal to `marked` (stripped) highlighted, as a feature fires."""
    acts = [1.0 if t.strip() == marked else 0.0 for t in tokens]
    e = Example(context=0, text_index=0, start=0, token_ids=list(range(len(tokens))),
                tokens=list(tokens), acts=acts, max_act=max(acts))  # fmt: skip
    return Highlighted(example=e, marked=[a > 0 for a in acts])


LOVE = Explained(feature=7, explainer="oneshot", text='The word "love".')
ROUND = [
    example("I", " love", " you", marked="love"),
    example("We", " love", " it", marked="love"),
    example("The", " red", " door", marked="red"),  # the intruder, 3rd
    example("They", " love", " tea", marked="love"),
    example("To", " love", " is", marked="love"),
]


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as s:
        yield s


def llm(server: FakeLLMServer) -> LLMClient:
    config = LLMConfig(base_url=server.base_url, api_key=SecretStr(server.api_key),
                       model="fake-model", timeout_s=5.0, backoff_base_s=0.01,
                       backoff_max_s=0.05)  # fmt: skip
    return LLMClient(config)


async def judged(server: FakeLLMServer, explained: Explained | None, **kw: Any) -> Any:
    async with llm(server) as client:
        judge = LLMJudge(client, **kw)
        return await judge.intruder(explained, [ROUND]), judge.usage


def tok(text: str, *top: tuple[str, float]) -> ScriptedToken:
    alternatives = [(t, math.log(p)) for t, p in top] or [(text, 0.0)]
    return (text, dict(alternatives).get(text, 0.0), alternatives)


def blocks(body: dict[str, Any]) -> list[str]:
    ask = str(body["messages"][1]["content"])
    return re.findall(r"<<<example_\d+\n(.*?)\nexample_\d+>>>", ask, re.DOTALL)


def test_llm_reads_each_example_s_probability_from_the_digit(server: FakeLLMServer) -> None:
    three = tok("3", ("3", 0.6), ("1", 0.2), ("0", 0.1), (" x", 0.1))
    server.responder = lambda body: Reply.text("3", logprobs=[three])
    (probs,), _ = asyncio.run(judged(server, LOVE))
    assert probs == pytest.approx([0.25, 0.0, 0.75, 0.0, 0.0])  # over the choices 1-5
    (body,) = server.requests
    assert (body["logprobs"], body["top_logprobs"], body["max_tokens"]) == (True, 5, 2)
    system, user = body["messages"]
    assert DATA_NOTE in system["content"] and "intruder" in system["content"]
    assert blocks(body) == ["I <<love>> you", "We <<love>> it", "The <<red>> door",
                            "They <<love>> tea", "To <<love>> is"]  # fmt: skip
    assert '<<<explanation\nThe word "love".\nexplanation>>>' in user["content"]
    # Without an explanation the prompt carries none.
    asyncio.run(judged(server, None))
    assert "<<<explanation" not in str(server.requests[-1]["messages"][1]["content"])


def test_llm_json_replies_are_checked_and_asked_again(server: FakeLLMServer) -> None:
    server.push(Reply.text('{"intruder": 7}'), Reply.text("the third"),
                Reply.json({"intruder": 3}))  # fmt: skip
    (probs,), usage = asyncio.run(judged(server, LOVE, mode="text"))
    assert probs == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert isinstance(usage, LLMUsage) and (usage.calls, usage.retries) == (3, 2)
    feedback = str(server.requests[1]["messages"][-1]["content"])
    assert "less than or equal to 5" in feedback
    assert '{"intruder": number}' in str(server.requests[0]["messages"][1]["content"])


def test_llm_unreadable_digit_is_asked_again_as_json(server: FakeLLMServer) -> None:
    def respond(body: dict[str, Any]) -> Reply:
        if body.get("logprobs"):  # "0" names no example
            return Reply.text("0", logprobs=[tok("0", ("0", 0.9), ("1", 0.1))])
        return Reply.json({"intruder": 3})

    server.responder = respond
    (probs,), _ = asyncio.run(judged(server, LOVE))
    assert probs == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert [bool(b.get("logprobs")) for b in server.requests] == [True, False]


def intruder_finder(body: dict[str, Any]) -> Reply:
    """A scorer LLM that names the example whose marked words the others share least."""
    marked = [{w.lower() for w in re.findall(r"<<(.*?)>>", b)} for b in blocks(body)]

    def shared(i: int) -> float:
        others = set().union(*(m for j, m in enumerate(marked) if j != i))
        return len(marked[i] & others) / max(len(marked[i]), 1)

    return Reply.json({"intruder": min(range(len(marked)), key=shared) + 1})


def test_llm_judged_scores_and_a_broken_judge_is_reported(
    small: Planted, server: FakeLLMServer
) -> None:
    f = small.f("word-love")
    examples = small.scoring("word-love")
    prose = Explained(feature=f, explainer="oneshot", text="The word love.")

    async def score(scorer: IntruderScorer) -> Score:
        async with llm(server) as client:
            return await scorer.score(prose, examples, LLMJudge(client, mode="text"))

    server.responder = intruder_finder
    free = asyncio.run(score(IntruderScorer(explained=False)))
    assert free.score == 1.0 and free.judge == "llm:fake-model", free
    assert free.llm_calls == ROUNDS and len(server.requests) == ROUNDS
    assert not any("<<<explanation" in str(b["messages"][1]["content"]) for b in server.requests)
    server.responder = lambda body: Reply.text("no idea")
    broken = asyncio.run(score(IntruderScorer(explained=True)))
    assert broken.score is None and broken.error, broken
    assert "intruder-explained scoring failed" in broken.error and "LLMOutputError" in broken.error


# -- the runner -------------------------------------------------------------------------


@dataclass
class Fixed:
    """Explains every feature by the same predicate."""

    name: str
    predicate: Predicate

    async def explain(self, feature: int, evidence: FeatureEvidence) -> Explained:
        return explained(feature, self.predicate, self.name)


def test_runner_judges_the_explanation_free_score_once_per_feature(
    small: Planted, redis_server: EmbeddedRedis, server: FakeLLMServer, tmp_path: Path
) -> None:
    names = ["word-love", "colour-words"]
    features = [small.f(n) for n in names]
    explainers = [Fixed("love", small.words("word-love")), Fixed("nowhere", TokenIn(words=("q",)))]
    run_id = f"intruder-{random.Random().getrandbits(32):08x}"
    results = BenchResults(redis.Redis.from_url(redis_server.url), run_id)
    cfg = results.start(BenchConfig(
        run_id=run_id, source="planted", evidence_id="e", features=features,
        explainers=[e.name for e in explainers], scorers=["intruder", "intruder-explained"],
        judges=["predicate", "llm"], per_quantile=4, non_activating=10, seed=0,
    ))  # fmt: skip
    server.responder = intruder_finder

    async def main() -> None:
        async with llm(server) as client:
            bench = Bench(
                cfg, small.store, explainers,
                [IntruderScorer(explained=False), IntruderScorer(explained=True)],
                [PredicateJudge(), LLMJudge(client, mode="text")], results,
            )  # fmt: skip
            await run_bench(bench)

    asyncio.run(main())
    scores = results.scores()
    by = {(s.explainer, s.scorer, s.feature): s for s in scores}
    # Explanation-free: the LLM judged each feature once (the predicate judge cannot),
    # and the other explainer got a copy that cost nothing.
    assert len(server.requests) == ROUNDS * len(features)
    for f in features:
        first, second = by[("love", "intruder", f)], by[("nowhere", "intruder", f)]
        assert first.judge == second.judge == "llm:fake-model"
        assert first.score == second.score == 1.0
        assert first.llm_calls == ROUNDS and second.llm_calls == 0
        assert second.details["shared_from"] == "love" and "shared_from" not in first.details
    # With the explanation: the predicate judge, per explainer.
    love = small.f("word-love")
    assert by[("love", "intruder-explained", love)].score == 1.0
    assert by[("nowhere", "intruder-explained", love)].score == pytest.approx(0.2)
    assert all(by[(e.name, "intruder-explained", f)].judge == "predicate"
               for e in explainers for f in features)  # fmt: skip
    # Floors only where the explanation matters.
    floors = [s for s in scores if is_floor(s.explainer)]
    assert floors and {s.scorer for s in floors} == {"intruder-explained"}
    # Again: nothing is judged twice.
    asyncio.run(main())
    assert len(server.requests) == ROUNDS * len(features)
