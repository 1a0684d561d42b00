"""The WordNet reader (Debian's wordnet-base files, read as they are) and the predicates
built on it: classes reach words the evidence never showed, function words belong to
no class, word families cover inflections."""

from __future__ import annotations

from pathlib import Path

import pytest

from lexicon.wordnet import WordNet, WordNetMissing, wordnet
from predicates.context import CodeLike, LineStart, SentenceStart
from predicates.language import Tiered, TokenView, levels
from predicates.lexical import DerivedFrom, FunctionWord, LemmaIn, WordClass


def view(*tokens: str) -> TokenView:
    return TokenView.of(tokens)


def test_morphy_finds_base_forms_of_regular_and_irregular_words() -> None:
    wn = wordnet()
    assert wn.lemmas("dogs", "n") == ("dog",)
    assert "mouse" in wn.lemmas("mice", "n")
    assert "run" in wn.lemmas("ran", "v")
    assert "change" in wn.lemmas("changing", "v")
    assert wn.lemmas("zzqx", "n") == ()


def test_classes_reach_members_and_skip_function_words() -> None:
    wn = wordnet()
    animal = wn.senses("animal", "n")[0].id
    for word in ("dog", "wombat", "Wombats", "giraffe"):
        assert animal in wn.classes(word), word
        assert "noun.animal" in wn.classes(word), word
    assert animal not in wn.classes("table")
    assert wn.classes("in") == frozenset()  # "inch" is a noun sense of "in", not a use
    assert wn.classes("the") == frozenset()
    members = wn.members(animal, 1)
    assert {"dog", "wombat", "aardvark"} <= members
    assert "table" not in members


def test_sister_terms_share_a_hypernym() -> None:
    wn = wordnet()
    assert {"hail", "sleet", "snow"} <= wn.sister_terms("rain")
    assert "rain" not in wn.sister_terms("rain") and "dog" not in wn.sister_terms("rain")
    assert wn.sister_terms("the") == set()  # a function word has no senses to share


def test_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WordNetMissing, match="wordnet-base"):
        WordNet(tmp_path)


def test_word_class_fires_on_unseen_members_whole_words() -> None:
    animals = WordClass(concept="noun.animal", name="animals", examples=("dog", "cat"))
    text = view("The", " wom", "bat", " ate", " a", " table", " near", " two", " gir", "affes")
    assert animals.evaluate(text) == [
        False, True, True, False, False, False, False, False, True, True,
    ]  # fmt: skip
    assert animals.describe() == 'words for animals, such as "dog", "cat"'


def test_lemma_family_covers_inflections_not_lookalikes() -> None:
    change = LemmaIn(lemmas=("change",))
    text = view("It", " changed", ",", " changes", " and", " changing", " exchange", "s")
    assert change.evaluate(text) == [False, True, False, True, False, True, False, False]
    assert change.size() == 1


def test_a_derived_family_covers_derivations_and_negations_not_lookalikes() -> None:
    remark = DerivedFrom(words=("remark",))
    text = view(" remarks", " remarkable", " unremarkable", " remarked", " mark", " market")
    assert remark.evaluate(text) == [True, True, True, True, False, False]
    fool = DerivedFrom(words=("fool",))
    assert fool.evaluate(view(" foolish", " foolishness", " food")) == [True, True, False]
    # A short root matches only itself: "man" does not take "manage" or "many".
    man = DerivedFrom(words=("man",))
    assert man.evaluate(view(" man", " manage", " many")) == [True, False, False]
    assert remark.describe() == 'the word "remark" and words built on it'


def test_function_words_and_positions() -> None:
    text = view("Of", " course", ".", " Then", " we", " sat", " on", " it", ".\n", "next")
    assert FunctionWord(category="prepositions").evaluate(text) == [
        True, False, False, False, False, False, True, False, False, False,
    ]  # fmt: skip
    assert SentenceStart().evaluate(text) == [
        True, False, False, True, False, False, False, False, False, True,
    ]  # fmt: skip
    assert LineStart().evaluate(text) == [
        True, False, False, False, False, False, False, False, False, True,
    ]  # fmt: skip


def test_code_spans() -> None:
    text = view("Use", " os", ".path", ".join", " or", " my", "_func", " here")
    assert CodeLike().evaluate(text) == [False, True, True, True, False, True, True, False]


def test_tiers_give_levels() -> None:
    tiered = Tiered(strong=LemmaIn(lemmas=("dog",)), weak=LemmaIn(lemmas=("cat",)))
    text = view("a", " dog", " and", " a", " cat")
    assert tiered.evaluate(text) == [False, True, False, False, True]
    strong, weak = levels(tiered, text)[1], levels(tiered, text)[4]
    assert strong == 1.0 and 0 < weak < 1.0


def test_an_or_whose_parts_fire_at_different_strengths_concludes_as_tiers() -> None:
    from agent.rules.tiers import tiered
    from predicates.language import AnyOf, WordIn
    from probes.evidence.store import FeatureEvidence, FeatureStatistics
    from tests.evidence_helpers import example

    top = [example([" the", " dog", " ran"], [0.0, 9.0, 0.0])] * 3
    weak = [example([" a", " cat", " sat"], [0.0, 2.0, 0.0])] * 3
    stats = FeatureStatistics(
        fired_tokens=6, tokens=18, density=0.3, mean_act=5.5, max_act=9.0,
        hist_counts=[], hist_edges=[],
    )  # fmt: skip
    evidence = FeatureEvidence(
        feature=0, evidence_id="x", stats=stats, top=top + weak, quantiles=[],
        non_activating=[], promoted=None, suppressed=None, similar=None,
    )  # fmt: skip
    dog, cat = WordIn(words=("dog",)), WordIn(words=("cat",))
    found = tiered((cat, dog), evidence, threshold=4.5)
    assert found == Tiered(strong=dog, weak=cat)
    assert "strongly" in found.describe()
    # Parts that fire alike stay one "or".
    assert tiered((cat, dog), evidence, threshold=1.0) == AnyOf(parts=(cat, dog))
