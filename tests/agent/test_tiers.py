"""Strength tiers split lists word by word, and keep out of the strong tier the words
the feature fires on only in a few of their occurrences (the judge writes its
generative texts from the strong tier)."""

from __future__ import annotations

from agent.rules.tiers import tiered
from predicates.language import Tiered, TokenIn, TokenView
from probes.evidence.store import Example, FeatureEvidence, FeatureStatistics, TokenFiring
from tests.evidence_helpers import example


def _evidence(examples: list[Example], firing: list[TokenFiring] | None = None) -> FeatureEvidence:
    stats = FeatureStatistics(
        fired_tokens=len(examples), tokens=3 * len(examples), density=0.3, mean_act=5.0,
        max_act=9.0, hist_counts=[], hist_edges=[],
    )  # fmt: skip
    return FeatureEvidence(
        feature=0, evidence_id="x", stats=stats, top=examples, quantiles=[],
        non_activating=[], promoted=None, suppressed=None, similar=None, token_firing=firing,
    )  # fmt: skip


STRONG_DOG = [example([" the", " dog", " ran"], [0.0, 9.0, 0.0])] * 3
WEAK_CAT = [example([" a", " cat", " sat"], [0.0, 2.0, 0.0])] * 3


def test_a_list_is_tiered_word_by_word() -> None:
    listed = TokenIn(words=("cat", "dog", "fox"))
    fox = [example([" a", " fox", " hid"], [0.0, 8.0, 0.0])] * 2
    found = tiered((listed,), _evidence(STRONG_DOG + WEAK_CAT + fox), threshold=4.5)
    assert found == Tiered(strong=TokenIn(words=("dog", "fox")), weak=TokenIn(words=("cat",)))
    view = TokenView.of([" cat", " and", " fox"])
    assert found.evaluate(view) == listed.evaluate(view)  # the same tokens, other levels


def test_a_strong_word_that_rarely_fires_over_the_split_is_weak() -> None:
    listed = TokenIn(words=("dog", "fox"))
    fox = [example([" a", " fox", " hid"], [0.0, 8.0, 0.0])] * 2
    firing = [
        TokenFiring(token=" dog", token_id=1, fires=40, occurrences=50),
        TokenFiring(token=" fox", token_id=2, fires=5, occurrences=500),  # fires on 1%
    ]
    found = tiered((listed,), _evidence(STRONG_DOG + fox, firing), threshold=4.5)
    assert found == Tiered(strong=TokenIn(words=("dog",)), weak=TokenIn(words=("fox",)))


def test_a_list_inside_an_and_is_tiered_word_by_word_keeping_its_condition() -> None:
    from predicates.language import AllOf, WordRegex
    from predicates.lexical import DerivedFrom

    lower = WordRegex(pattern="^[a-z]+$")
    listed = AllOf(parts=(DerivedFrom(words=("cat", "dog", "fox")), lower))
    fox = [example([" a", " fox", " hid"], [0.0, 8.0, 0.0])] * 2
    found = tiered((listed,), _evidence(STRONG_DOG + WEAK_CAT + fox), threshold=4.5)
    assert found == Tiered(
        strong=AllOf(parts=(DerivedFrom(words=("dog", "fox")), lower)),
        weak=AllOf(parts=(DerivedFrom(words=("cat",)), lower)),
    )


def test_probes_where_a_strong_looking_word_stayed_quiet_make_it_weak() -> None:
    from agent.rules.synthesis import Labeled

    listed = TokenIn(words=("dog", "fox"))
    fox = [example([" a", " fox", " hid"], [0.0, 8.0, 0.0])] * 2
    evidence = _evidence(STRONG_DOG + fox)
    assert tiered((listed,), evidence, threshold=4.5) == listed  # both look strong
    quiet_fox = Labeled(TokenView.of([" the", " fox", " slept"]), (False, False, False))
    loud_dog = Labeled(TokenView.of([" a", " dog", " barked"]), (False, True, False))
    found = tiered((listed,), evidence, 4.5, tests=[quiet_fox, quiet_fox, quiet_fox, loud_dog])
    assert found == Tiered(strong=TokenIn(words=("dog",)), weak=TokenIn(words=("fox",)))
    # One quiet probe against the evidence's strong firing is not enough to demote it.
    assert tiered((listed,), evidence, 4.5, tests=[quiet_fox, loud_dog]) == listed


def test_a_list_whose_words_fire_alike_stays_whole() -> None:
    listed = TokenIn(words=("dog", "cat"))
    assert tiered((listed,), _evidence(STRONG_DOG + WEAK_CAT), threshold=1.0) == listed


def test_reliable_tokens_the_predicate_misses_join_its_weak_tier() -> None:
    from agent.rules.tiers import RELIABLE_ADDED, with_reliable_tokens

    firing = [
        TokenFiring(token=" dog", token_id=1, fires=90, occurrences=100),  # already named
        TokenFiring(token=" the", token_id=2, fires=80, occurrences=4000),  # fires on 2%
        TokenFiring(token=" puppy", token_id=3, fires=30, occurrences=40),
        TokenFiring(token=" Puppy", token_id=4, fires=5, occurrences=6),  # the same word
        TokenFiring(token=" hound", token_id=5, fires=2, occurrences=2),  # too few to tell
        *(TokenFiring(token=f" w{i}", token_id=10 + i, fires=9, occurrences=10) for i in range(5)),
    ]
    dog = TokenIn(words=("dog",))
    found = with_reliable_tokens(dog, _evidence(STRONG_DOG, firing))
    assert isinstance(found, Tiered) and found.strong == dog
    added = found.weak
    assert isinstance(added, TokenIn) and len(added.words) == RELIABLE_ADDED
    assert added.words[0] == "puppy" and not {"dog", "the", "hound"} & set(added.words)
    # Nothing reliable to add: the predicate is left as it was.
    assert with_reliable_tokens(dog, _evidence(STRONG_DOG, firing[:2])) == dog


def test_with_no_word_likely_at_strength_the_likeliest_are_still_the_core() -> None:
    # Over the split "dog" reaches the threshold in a fifth of its occurrences, "cat" in
    # one in a hundred: neither is strong, but texts written from "dog" fire more often.
    listed = TokenIn(words=("dog", "cat"))
    firing = [
        TokenFiring(token=" dog", token_id=1, fires=20, occurrences=100),
        TokenFiring(token=" cat", token_id=2, fires=1, occurrences=100),
    ]
    cat = [example([" a", " cat", " sat"], [0.0, 9.0, 0.0])] * 3
    found = tiered((listed,), _evidence(STRONG_DOG + cat, firing), threshold=4.5)
    assert found == Tiered(strong=TokenIn(words=("dog",)), weak=TokenIn(words=("cat",)))
