"""Semantic fields (real MiniLM word vectors, shipped offline): a field made from the
animal words a feature fires on covers animals the evidence never showed and not the
words of its quiet contexts; a concluded predicate gains one only when it separates the
evidence better."""

from __future__ import annotations

from agent.rules.fields import with_field
from predicates.language import FAINT, Tiered, TokenIn, TokenView, as_dict, from_dict, levels
from predicates.semantic import SemanticField, field_scores
from probes.evidence.store import Example, FeatureEvidence, FeatureStatistics, QuantileBin
from tests.evidence_helpers import example

ANIMALS = ["dog", "cat", "horse", "cow", "sheep", "goat", "pig", "rabbit", "mouse", "lion"]
OTHER = ["table", "window", "paper", "number", "river", "music", "engine", "market", "bridge"]


def fired_on(word: str) -> Example:
    return example([" the", f" {word}", " ran", " away"], [0.0, 6.0, 0.0, 0.0])


def quiet(word: str) -> Example:
    return example([" a", f" {word}", " was", " there"], [0.0, 0.0, 0.0, 0.0])


def evidence(positives: list[Example], negatives: list[Example]) -> FeatureEvidence:
    stats = FeatureStatistics(
        fired_tokens=len(positives), tokens=4 * len(positives), density=0.1, mean_act=5.0,
        max_act=6.0, hist_counts=[], hist_edges=[],
    )  # fmt: skip
    bins = [QuantileBin(index=0, lo=6.0, hi=6.0, examples=positives)]
    return FeatureEvidence(
        feature=0, evidence_id="x", stats=stats, top=positives[:2], quantiles=bins,
        non_activating=negatives, promoted=None, suppressed=None, similar=None,
    )  # fmt: skip


def test_a_field_covers_unseen_members_and_not_its_contrast() -> None:
    field = SemanticField(anchors=tuple(ANIMALS), contrast=tuple(OTHER), margin=0.0)
    assert from_dict(as_dict(field)) == field
    for unseen in ("donkey", "giraffe", "elephant", "Tiger"):
        assert field.holds_for_word(unseen), unseen
    for word in ("chair", "document", "the", "of", "it"):
        assert not field.holds_for_word(word), word
    # Left out of its own lists, an anchor is judged as a new word would be.
    inside, left_out = field_scores(field, ["dog"]), field_scores(field, ["dog"], leave_out=True)
    assert left_out[0] < inside[0]
    assert "words related to" in field.describe() and '"dog"' in field.describe()


def test_a_predicate_gains_a_field_only_when_it_separates_the_evidence() -> None:
    found = evidence([fired_on(w) for w in ANIMALS], [quiet(w) for w in OTHER * 3])
    narrow = TokenIn(words=("dog",))
    widened = with_field(narrow, found)
    assert isinstance(widened, Tiered) and widened.strong == narrow and widened.weak is None
    assert isinstance(widened.faint, SemanticField)
    view = TokenView.of([" the", " donkey", " and", " the", " dog"])
    assert widened.evaluate(view) == [False, True, False, False, True]
    assert levels(widened, view) == [0.0, FAINT, 0.0, 0.0, 1.0]  # a field fires faintly
    assert widened.describe().startswith('the token "dog" (strongly); faintly, words related to')
    # A predicate that already separates the evidence keeps as it is.
    exact = TokenIn(words=tuple(ANIMALS))
    assert with_field(exact, found) == exact
    # Too few firing words to make a field from: unchanged.
    few = evidence([fired_on("dog"), fired_on("cat")], [quiet(w) for w in OTHER])
    assert with_field(narrow, few) == narrow


def test_a_field_is_judged_on_quiet_contexts_its_contrast_never_saw() -> None:
    # Farm animals are quiet, each in one context. Judged on the contexts its contrast
    # was taken from, a broad field looked clean (each farm word excludes itself) and
    # took in the farm animals the evidence never showed; judged on contexts its
    # contrast never saw, the field is narrowed to what it separates there.
    farm = ["sheep", "goat", "pig", "cow", "donkey", "hen", "ox", "mule", "lamb", "calf"]
    wild = ["lion", "tiger", "wolf", "bear", "fox", "deer", "eagle", "snake", "shark", "whale"]
    negatives = [quiet(w) for pair in zip([*OTHER, "chair"], farm, strict=True) for w in pair]
    widened = with_field(TokenIn(words=("lion",)), evidence([fired_on(w) for w in wild], negatives))
    assert isinstance(widened, Tiered) and isinstance(widened.faint, SemanticField)
    assert not [w for w in ("duck", "turkey", *farm) if widened.faint.holds_for_word(w)]
    assert [w for w in ("panther", "leopard", "cobra") if widened.faint.holds_for_word(w)]
