"""A semantic field is a hypothesis the rules agent tests on members the evidence never
showed (real MiniLM word vectors): its tests put the closest unseen members where the
feature fired on an anchor, expected to fire at least faintly; the conclusion keeps the
field only when one did, and cites those tests."""

from __future__ import annotations

import asyncio
import random

from agent.rules.field_tests import (
    MAX_CHARS,
    content_words,
    field_of,
    field_test_agrees,
    firing_sites,
    unseen_field_tests,
    unseen_member_words,
)
from agent.rules.pool_index import PoolIndex
from agent.rules.reasoner import RulesReasoner
from agent.state import AgentState, Expect, Experiment, Hypothesis, Outcome, Status
from predicates.language import Tiered, TokenView, as_dict, from_dict
from predicates.semantic import SemanticField
from tests.agent.test_fields import ANIMALS, OTHER, evidence, fired_on, quiet
from tests.evidence_helpers import example

FIELD = SemanticField(anchors=tuple(ANIMALS), contrast=tuple(OTHER), margin=0.0)


def test_unseen_members_are_the_closest_words_never_shown() -> None:
    words = ["chair", "dog", "donkey", "engine", "giraffe", "number", "seen"]
    found = unseen_member_words(FIELD, words, {"seen"}, random.Random(0))
    assert set(found) >= {"donkey", "giraffe"}
    assert not {"dog", "engine", "number", "seen", "chair"} & set(found)  # shown, or not in


def test_members_are_whole_words_written_more_than_once() -> None:
    pool = [TokenView.of(["A", " gir", "affe", " ate", " the", " hay"]), TokenView.of(["Giraffe"])]
    assert content_words(pool) == ["giraffe"]  # not "affe", nor "hay" (seen once)


def test_field_tests_put_unseen_members_where_the_feature_fired_with_a_control() -> None:
    examples = [
        example(["The", " big", " Dog", " slept", "."], [0.0, 0.0, 3.0, 0.0, 0.0]),
        example(["A", " cat", " sat", "."], [0.0, 9.0, 0.0, 0.0]),  # the strongest
        example(["Our", " dog", " ran"], [0.0, 0.0, 0.0]),  # never fired on its anchor
    ]
    sites = firing_sites(FIELD, examples)
    assert [s.text for s in sites] == ["A cat sat.", "The big Dog slept."]
    pool = [TokenView.of(["A", " giraffe", " ate", "."])]
    rng = random.Random(0)
    tests = unseen_field_tests(
        FIELD, sites, pool, PoolIndex(pool), ["giraffe", "donkey"], set(), rng
    )
    members, control = tests[:2], tests[2]
    assert [t.text for t in members] == ["A giraffe sat.", "The big Donkey slept."]
    assert all(t.expect is Expect.WEAK for t in members)
    assert [t.expected_peak for t in members] == ["giraffe", "donkey"]
    assert control.expect is Expect.LOW and control.expected_peak in FIELD.contrast
    assert control.text == f"A {control.expected_peak} sat."
    # Without a site of its own, a pool line that holds an anchor; without that either,
    # a member is tested where the pool holds it.
    anchored = [TokenView.of(["The", " Dog", " slept", "."])]
    found = unseen_field_tests(FIELD, [], anchored, PoolIndex(anchored), ["giraffe"], set(), rng)
    assert found[0].text == "The Giraffe slept."
    found = unseen_field_tests(FIELD, [], pool, PoolIndex(pool), ["giraffe"], set(), rng)
    assert [(t.text, t.expect) for t in found] == [("A giraffe ate.", Expect.WEAK)]
    # A text is tested once.
    again = unseen_field_tests(
        FIELD, [], pool, PoolIndex(pool), ["giraffe"], {"A giraffe ate."}, rng
    )
    assert again == []


def test_a_long_site_is_cut_around_its_anchor() -> None:
    words = [" word"] * 100 + [" dog"] + [" after"] * 60
    acts = [0.0] * 100 + [5.0] + [0.0] * 60
    (site,) = firing_sites(FIELD, [example(words, acts)])
    assert len(site.text) <= MAX_CHARS and site.text[site.start : site.end] == "dog"
    assert site.start > site.end - site.start  # most of what the model reads it by
    assert not site.text.startswith(" ") and site.text.endswith("after")


def _test(hypothesis: str, id_: str, acts: list[float]) -> Experiment:
    tokens = ["The", " donkey", " slept", "."]
    outcome = Outcome(
        max_act=max(acts), peak_token=None, peak_index=None, tokens=tokens, acts=acts,
        fired=max(acts) >= 5.0,
    )  # fmt: skip
    return Experiment(
        id=id_, hypothesis=hypothesis, text="The donkey slept.", expect=Expect.WEAK,
        expected_peak=" donkey", outcome=outcome,
    )  # fmt: skip


def test_a_member_test_agrees_when_the_member_fires_a_control_when_it_does_not() -> None:
    fired = _test("H2", "E1", [0.0, 1.5, 0.0, 0.0])  # below tau: still fires
    assert field_test_agrees(FIELD, fired)
    assert not field_test_agrees(FIELD, _test("H2", "E1", [0.0, 0.0, 0.0, 0.0]))
    assert not field_test_agrees(FIELD, _test("H2", "E1", [0.0, 0.0, 3.0, 0.0]))  # elsewhere
    assert fired.agrees and not _test("H2", "E1", [0.0, 0.0, 3.0, 0.0]).agrees  # as the UI shows
    control = fired.model_copy(update={"expect": Expect.LOW})
    assert not field_test_agrees(FIELD, control)
    # The member split into pieces by the model's tokens is still found.
    assert fired.outcome is not None
    pieces = {"tokens": ["The", " don", "key", " slept"], "acts": [0.0, 0.0, 2.0, 0.0]}
    split = fired.model_copy(update={"outcome": fired.outcome.model_copy(update=pieces)})
    assert field_test_agrees(FIELD, split)


def _run(
    tests: list[list[float]], control: list[float] | None = None
) -> tuple[Status, Tiered | None, list[str]]:
    """A run whose field hypothesis (H2) had `tests`: its verdict, and the concluded
    predicate's field with the tests the conclusion cites."""
    found = evidence([fired_on(w) for w in ANIMALS], [quiet(w) for w in OTHER * 3])
    reasoner = RulesReasoner(pool=[TokenView.of(["The", " dog", " ran"])], embed=None)
    dog = {"kind": "token_in", "words": ["dog"], "case_sensitive": False}
    hypotheses = [
        Hypothesis(id="H1", statement="dog", fires_on="dog", not_on="-", predicate=dog),
        Hypothesis(id="H2", statement="field", fires_on="-", not_on="-", predicate=as_dict(FIELD)),
    ]
    experiments = [_test("H2", f"E{i + 1}", acts) for i, acts in enumerate(tests)]
    if control is not None:
        low = _test("H2", "E9", control).model_copy(update={"expect": Expect.LOW})
        experiments.append(low)
    state = AgentState(feature=0, threshold=5.0, hypotheses=hypotheses, experiments=experiments)
    verdict = asyncio.run(reasoner.analyze(state, hypotheses[1], found))
    decided = [
        h.model_copy(update={"status": verdict.status}) if h.id == "H2" else h for h in hypotheses
    ]
    concluded = asyncio.run(
        reasoner.conclude(state.model_copy(update={"hypotheses": decided}), found)
    )
    predicate = from_dict(concluded.predicate or {})
    return verdict.status, predicate if isinstance(predicate, Tiered) else None, concluded.evidence


def test_a_field_whose_unseen_members_fire_is_kept_and_cited() -> None:
    quiet_control = [0.0, 0.0, 0.0, 0.0]
    status, predicate, cited = _run([[0.0, 1.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], quiet_control)
    assert status is Status.CONFIRMED
    assert predicate is not None and predicate.faint == FIELD
    assert {"E1", "E9"} <= set(cited) and "E2" not in cited
    # A non-member in the same place fired too: the place fires, not the field.
    status, predicate, _ = _run([[0.0, 1.5, 0.0, 0.0]], [0.0, 2.0, 0.0, 0.0])
    assert status is Status.REFUTED and (predicate is None or predicate.faint is None)


def test_a_field_whose_unseen_members_stay_quiet_is_left_out() -> None:
    status, predicate, cited = _run([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert status is Status.REFUTED
    assert predicate is None or predicate.faint is None
    assert not {"E1", "E2"} & set(cited)
    # Never tested (no unseen member in the pool): refuted too, as unshown.
    status, predicate, _ = _run([])
    assert status is Status.REFUTED and (predicate is None or predicate.faint is None)


def test_only_a_field_hypothesis_has_a_field() -> None:
    field = Hypothesis(id="H1", statement="-", fires_on="-", not_on="-", predicate=as_dict(FIELD))
    plain = field.model_copy(update={"predicate": {"kind": "token_in", "words": ["dog"]}})
    assert field_of(field) == FIELD and field_of(plain) is None
