"""Output claims against steering's promotions (predicates/output.py): precision and
recall of the promoted tokens a claim names, counted as the scorer and agent count."""

from __future__ import annotations

import dataclasses

import pytest

from predicates.language import AnyOf, Preceded, TokenIn, TokenRegex
from predicates.lexical import FunctionWord
from predicates.output import claim_fit, named_in, names_token
from probes.promotions import Candidate, Promotions


def promotions(promoted: list[str], others: list[str]) -> Promotions:
    tokens = promoted + others
    return Promotions(
        texts=4,
        kl=0.5,
        candidates=tuple(
            Candidate(token, i, 2.0 - i * 0.01 if token in promoted else -0.1)
            for i, token in enumerate(tokens)
        ),
        promoted_count=len(promoted),
        boosted_count=len(promoted),
    )


STEERED = promotions([" friend", " Friend", " friends", " pal"], [" the", " a", ",", " dog"])


def test_a_list_naming_promoted_tokens_is_precise_and_recalls_what_it_names() -> None:
    fit = claim_fit(TokenIn(words=("friend", "friends")), STEERED)
    # Counted in words: " friend" and " Friend" are one, so 2 of the 3 promoted words.
    assert (fit.named, fit.hits, fit.promoted) == (2, 2, 3)
    assert fit.precision == 1.0 and fit.recall == pytest.approx(2 / 3)
    assert fit.f1 == pytest.approx(0.8)


def test_listed_words_steering_never_made_likely_count_against_precision() -> None:
    fit = claim_fit(TokenIn(words=("friend", "comrade", "buddy")), STEERED)
    assert (fit.named, fit.hits) == (3, 1)  # comrade and buddy named, never candidates
    alternatives = AnyOf(parts=(TokenIn(words=("pal",)), TokenIn(words=("mate",))))
    assert claim_fit(alternatives, STEERED).named == 2


def test_a_class_claim_is_judged_on_the_candidates_it_covers() -> None:
    fit = claim_fit(FunctionWord(category="determiners"), STEERED)
    assert (fit.named, fit.hits) == (2, 0) and fit.f1 == 0.0
    punctuation = claim_fit(TokenRegex(pattern=r"[^\w\s]+", meaning="punctuation"), STEERED)
    assert (punctuation.named, punctuation.hits) == (1, 0)


def test_a_word_boosted_below_the_top_is_right_to_name_but_recalls_nothing() -> None:
    steered = dataclasses.replace(STEERED, promoted_count=2, boosted_count=4)
    fit = claim_fit(TokenIn(words=("pal",)), steered)  # 4th: boosted, not among the top 2
    assert (fit.named, fit.hits, fit.promoted, fit.recalled) == (1, 1, 1, 0)
    assert fit.precision == 1.0 and fit.recall == 0.0


def test_a_context_claim_names_no_next_token() -> None:
    after_comma = Preceded(pattern=",$", meaning="after a comma")
    assert not names_token(after_comma, " friend")
    assert claim_fit(after_comma, STEERED).named == 0


def test_nothing_promoted_gives_zero_recall_not_a_division_error() -> None:
    quiet = promotions([], [" the", " a"])
    fit = claim_fit(TokenIn(words=("the",)), quiet)
    assert fit.recall == 0.0 and fit.f1 == 0.0 and fit.precision == 0.0


def test_a_continuation_shows_the_tokens_a_claim_names() -> None:
    claim = TokenIn(words=("friend", "pal"))
    assert named_in(claim, "my friend, my Pal and my dog") == 2
    assert named_in(claim, "") == 0
    assert named_in(claim, "friendship") == 0
