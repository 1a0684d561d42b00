"""Label collisions: which explanations of one explainer say the same thing, by what
their predicates name (not their shared wording) or, for prose, by real MiniLM
embeddings."""

from __future__ import annotations

from typing import Any

from evals.collisions import collisions, named
from evals.core import Explained
from lexicon.embeddings import MiniLMEmbedder


def listed(*words: str) -> dict[str, Any]:
    return {"kind": "token_in", "words": list(words)}


def explained(
    feature: int, predicate: dict[str, Any] | None, text: str = "x", by: str = "a"
) -> Explained:
    return Explained(feature=feature, explainer=by, text=text, predicate=predicate)


def test_predicates_collide_by_what_they_name() -> None:
    digits = {"kind": "token_regex", "pattern": r"\d+"}
    assert named({"kind": "any_of", "parts": [listed("Dog", "cat"), digits]}) == {
        "dog", "cat", r"pattern:\d+"
    }  # fmt: skip
    found = collisions(
        [
            explained(1, listed("dog", "cat", "cow")),
            explained(2, listed("dog", "cat", "horse")),  # 2 of 4 alike: collides with 1
            explained(3, listed("dog", "tree", "sky", "sun")),  # 1 of 6 with 1: does not
            explained(4, listed("tree", "sky", "sun", "dog")),  # the same things as 3
            explained(5, listed("dog", "cat", "cow"), by="b"),  # another explainer's
        ]
    )
    pairs = {(c.feature, c.other): c.why for c in found}
    assert set(pairs) == {(1, 2), (2, 1), (3, 4), (4, 3)}
    assert pairs[(1, 2)] == "name 2 of 4 things alike"
    assert pairs[(3, 4)] == "name 4 of 4 things alike"
    same = collisions([explained(1, listed("a", "b")), explained(2, listed("a", "b"))])
    assert {c.why for c in same} == {"same predicate"}


def test_prose_collides_by_embedding() -> None:
    prose = [
        explained(1, None, "Words for animals such as dogs, cats and horses."),
        explained(2, None, "Animal words such as dog, cat and horse."),
        explained(3, None, "Closing parentheses at the end of Python function calls."),
    ]
    assert collisions(prose) == []  # no embedder: prose is not compared
    found = collisions(prose, MiniLMEmbedder())
    assert {(c.feature, c.other) for c in found} == {(1, 2), (2, 1)}
    assert all(c.why.startswith("cosine ") and float(c.why.split()[1]) >= 0.8 for c in found)
