"""The rules reasoner's predicates and their synthesis from evidence: each predicate on
hand-made token views, and synthesis recovering the shipped planted features from real
evidence (the default corpus read with SmolLM2's tokenizer), scored on the held-out
split that synthesis never saw."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from agent.rules.hypotheses import evidence_data, hypotheses_from_evidence, labeled
from agent.rules.synthesis import Labeled, agreement, evaluate, pruned, synthesize
from agent.rules.table import TokenTable
from predicates.language import (
    AfterLinePrefix,
    AllOf,
    AnyOf,
    InsideQuotes,
    Neighbour,
    Not,
    Preceded,
    Predicate,
    PredicateHolder,
    TokenIn,
    TokenRegex,
    TokenView,
    WordIn,
    WordRegex,
    from_dict,
)
from predicates.lexical import DerivedFrom, FunctionWord, LemmaIn, WordClass
from probes.evidence.store import EvidenceStore
from probes.planted import PlantedFeatures

VIEW = TokenView.of(
    [
        *("He", " said", ' "', "hel", "lo", " there", '."', " --", " UN", "IX", " of", " Tw"),
        *("ain", ",", " 1900", "\n", "--", " Al", " Bob", ",", " Esq"),
    ]
)


def fired(predicate: Any) -> list[str]:
    return [t for t, on in zip(VIEW.tokens, predicate.evaluate(VIEW), strict=True) if on]


def test_token_predicates() -> None:
    assert fired(TokenIn(words=("said", "al"))) == [" said", " Al"]
    assert fired(TokenIn(words=("al",), case_sensitive=True)) == []
    assert fired(TokenRegex(pattern=r"\d+")) == [" 1900"]
    assert fired(Neighbour(offset=-1, inner=TokenIn(words=("said",)))) == [' "']
    assert fired(Neighbour(offset=1, inner=TokenIn(words=("said",)))) == ["He"]


def test_word_predicates_span_tokens() -> None:
    assert fired(WordIn(words=("hello", "twain"))) == ["hel", "lo", " Tw", "ain"]
    assert fired(WordRegex(pattern=r"[A-Z]{2,}")) == [" UN", "IX"]
    assert fired(Preceded(pattern=r"\bof ")) == [" Tw", "ain"]


def test_blank_tokens_by_shape() -> None:
    from predicates.language import BlankToken

    text = TokenView.of(["end", ".", " ", " Next", "\n", "\t", "\t\t", "  ", " \n  ", "x"])
    on = {shape: BlankToken(shape=shape).evaluate(text) for shape in ("space", "newline", "tab")}
    assert on["space"] == [False, False, True, False, False, False, False, True, False, False]
    assert on["newline"] == [False, False, False, False, True, False, False, False, True, False]
    assert on["tab"] == [False, False, False, False, False, True, True, False, False, False]


def test_synthesis_finds_a_feature_of_spacing() -> None:
    """The second space between sentences: no word list can name a blank token."""
    texts = [
        (["It", " rained", ".", " ", " We", " left", "."], 3),
        (["Yes", ".", " ", " No", "."], 2),
        (["A", " b", " c", ".", " ", " D", " e", "."], 4),
        (["Go", " now", ".", " Then", " stop", "."], None),
    ]
    data = [
        Labeled(TokenView.of(tokens), tuple(i == at for i in range(len(tokens))))
        for tokens, at in texts * 3
    ]
    found = synthesize(data)
    assert found.agreement.f1 == 1.0
    assert "spaces only" in found.predicate.describe()


def test_span_predicates() -> None:
    assert fired(InsideQuotes()) == ["hel", "lo", " there", '."']
    assert fired(AfterLinePrefix(prefix="--")) == [" Al", " Bob", ",", " Esq"]
    assert fired(AfterLinePrefix(prefix="--", until=",")) == [" Al", " Bob"]


def test_the_token_table_judges_keyed_predicates_as_text_by_text() -> None:
    """Word families, derivations, classes and function words are judged from each
    distinct word's keys: the same verdicts as evaluating every text, also next door."""
    texts = [
        ["The", " dogs", " changed", " their", " unremarkable", " minds", "."],
        ["A", " cat", " was", " changing", " in", " the", " market", " of", " remarks"],
        ["Fool", "ish", " wolves", " exchange", " foods", " with", " man", "agers"],
    ]
    data = [Labeled(TokenView.of(t), (False,) * len(t)) for t in texts]
    table = TokenTable.of(data)
    keyed: list[Predicate] = [
        LemmaIn(lemmas=("change", "mind")),
        DerivedFrom(words=("remark", "fool", "man")),
        WordClass(concept="noun.animal", name="animals"),
        FunctionWord(category="prepositions"),
    ]
    near_keyed: list[Predicate] = [Neighbour(offset=o, inner=p) for p in keyed for o in (-1, 1)]
    for predicate in keyed + near_keyed:
        by_text = [v for item in data for v in item.verdicts(predicate)]
        found = table.verdicts(predicate)
        assert found is not None and found.tolist() == by_text, predicate
    animals = table.verdicts(keyed[2])
    assert animals is not None and animals.sum() == 3  # dogs, cat, wolves
    # Next to a combination, read from the table's rows when the texts are whole.
    either = AnyOf(parts=(keyed[0], TokenIn(words=("the",))))
    for offset in (-1, 1):
        near = AllOf(parts=(Neighbour(offset=offset, inner=either), Not(inner=either)))
        found = table.verdicts(near)
        assert found is not None
        assert found.tolist() == [v for item in data for v in item.verdicts(near)]
    # With context-only tokens before the labels, a neighbour may be unjudged: no answer.
    with_context = TokenTable.of([Labeled(TokenView.of(texts[0]), (False,) * 6, offset=1)])
    assert with_context.verdicts(Neighbour(offset=-1, inner=either)) is None


def test_combinations_describe_and_round_trip() -> None:
    caps_after_lower = AllOf(
        parts=(
            WordRegex(pattern=r"[A-Z][a-z]+", meaning="capitalised words"),
            Preceded(pattern="[a-z] ", meaning="after a lowercase letter and a space"),
        )
    )
    either = AnyOf(parts=(caps_after_lower, TokenRegex(pattern=r"\d+", meaning="numbers")))
    assert fired(either) == [" Tw", "ain", " 1900", " Bob"]  # "Al Bob": after "l "
    assert "capitalised words" in either.describe() and "numbers" in either.describe()
    again = PredicateHolder.model_validate_json(PredicateHolder(predicate=either).model_dump_json())
    assert again.predicate == either and fired(again.predicate) == fired(either)


def test_parts_that_change_no_verdict_are_pruned() -> None:
    # Growth by "and" turns "after a quote, or numbers" into "(...) and numbers": the
    # "or" then says nothing the numbers do not, and costs words.
    numbers = TokenRegex(pattern=r"\d+", meaning="numbers")
    after_quote = Neighbour(offset=-1, inner=TokenIn(words=('"',)))
    labels = tuple(t == " 1900" for t in VIEW.tokens)
    data = [Labeled(VIEW, labels)]
    table = TokenTable.of(data)
    grown = AllOf(parts=(AnyOf(parts=(after_quote, numbers)), numbers))
    assert pruned(grown, data, table) == numbers
    either = AnyOf(parts=(after_quote, numbers))  # both parts hold somewhere: both stay
    assert pruned(either, data, table) == either
    assert fired(after_quote) == ["hel"]


def test_synthesis_refuses_data_without_firing() -> None:
    with pytest.raises(ValueError, match="nothing to explain"):
        synthesize([Labeled(VIEW, (False,) * len(VIEW.tokens))])


# -- planted features on real evidence -------------------------------------------------


def test_synthesis_recovers_planted_rules_on_held_out_text(
    planted_evidence: tuple[EvidenceStore, PlantedFeatures],
) -> None:
    store, planted = planted_evidence
    held_out_f1: dict[str, float] = {}
    predicates = {}
    for f, name in enumerate(planted.feature_names):
        shown = store.feature(f, non_activating=50)
        seen = shown.top + [e for b in shown.quantiles for e in b.examples] + shown.non_activating
        found = synthesize(labeled(seen))
        scoring = store.scoring_examples(f)
        held = labeled([e for b in scoring.quantiles for e in b.examples] + scoring.non_activating)
        truth = np.fromiter((v for item in held for v in item.labels), dtype=bool)
        held_out_f1[name] = agreement(evaluate(found.predicate, held), truth).f1
        predicates[name] = found.predicate
    single_rule = [n for n in held_out_f1 if "-or-" not in n]
    good = [n for n in single_rule if held_out_f1[n] >= 0.9]
    assert len(good) >= 0.8 * len(single_rule), held_out_f1
    # Rules that no word list can express are found as the rule itself.
    assert isinstance(predicates["digits"], TokenRegex | WordRegex)
    assert "after" in predicates["word-after-of"].describe()


def test_hypotheses_are_rivals_with_a_negative_control(
    planted_evidence: tuple[EvidenceStore, PlantedFeatures],
) -> None:
    store, planted = planted_evidence
    evidence = store.feature(planted.feature_index("digits"), non_activating=50)
    hypotheses = hypotheses_from_evidence(evidence)
    assert len(hypotheses) == 4 and [h.id for h in hypotheses] == ["H1", "H2", "H3", "H4"]
    rivals, control = hypotheses[:3], hypotheses[3]
    assert len({json.dumps(h.predicate, sort_keys=True) for h in rivals}) == 3
    assert control.negative_control and not any(h.negative_control for h in rivals)
    data = evidence_data(evidence)
    truth = np.fromiter((v for item in data for v in item.labels), dtype=bool)

    def f1(h: Any) -> float:
        assert h.predicate is not None
        return agreement(evaluate(from_dict(h.predicate), data), truth).f1

    assert f1(rivals[0]) >= f1(rivals[1]) >= f1(rivals[2])
    assert f1(rivals[0]) > 0.95 and f1(control) < 0.2
