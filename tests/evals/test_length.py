"""Explanation length (evals.length) and its place in the bench report: median words and
listed items per explainer, and per feature in the JSON results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.core import Explained, Score
from evals.length import listed_items, words
from evals.report import summarize, write_report
from evals.results import BenchConfig
from predicates.language import TokenIn, as_dict
from predicates.semantic import SHOWN, SemanticField


def test_words_are_whitespace_separated() -> None:
    assert words("Fires on   the\nword “love”.") == 5
    assert words("  ") == 0


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ('Fires on the tokens "change", "changes", "cf" and 37 more.', 40),
        ("Fires on the tokens “elephant”, “wombat”, … and 50 more", 52),
        ("Animal names such as 'cat', 'dog' or 'wombat'.", 3),
        ("Animal names such as 'cat', 'dog', and 'wombat'.", 3),
        ('Possessives: "\'s", "\'"', 2),  # quotes inside quoted items are not items
        ("Words for animals, in any form.", 0),
        ("It's the dogs' bone, isn't it", 0),  # apostrophes are no quotes
        ("The word 'love' on its own", 0),  # a lone 'x' is no listing
        ("and 1,200 more", 1200),
        ("Fires on numbers; 3 more in the tail, and 4 more at the start", 7),
    ],
)
def test_listed_items_in_prose(text: str, items: int) -> None:
    assert listed_items(text, None) == items


def test_listed_items_walk_a_predicate_of_any_shape() -> None:
    predicate = {
        "kind": "any_of",
        "parts": [
            {"kind": "word_in", "words": ["cat", "dog"], "case_sensitive": False},
            {"kind": "word_class", "concept": "noun.animal", "examples": ["ox", "yak", "eel"]},
            {"kind": "in_context", "inner": {"kind": "lemma_in", "lemmas": ["run"]}},
        ],
        "meaning": "words: not a list, not counted",
    }
    assert listed_items("ignored: 'a', 'b' and 99 more", predicate) == 6
    assert listed_items('"x", "y"', {"kind": "token_regex", "pattern": "[0-9]+"}) == 0
    # A semantic field is a class: it lists the anchors its description names.
    field = SemanticField(anchors=tuple(f"a{i}" for i in range(40)), contrast=("q",), margin=0.0)
    assert listed_items(field.describe(), as_dict(field)) == SHOWN == 3
    assert listed_items(field.describe(), None) == SHOWN  # three quoted, "a field of 40"


def test_a_listing_predicate_reads_the_same_as_its_prose() -> None:
    predicate = TokenIn(words=tuple(f"w{i}" for i in range(12)))
    text = f"Fires on {predicate.describe()}."
    assert listed_items(text, as_dict(predicate)) == 12
    assert listed_items(text, None) == 12  # five quoted, "and 7 more"


def _explained(explainer: str, feature: int, text: str, listed: int | None) -> Explained:
    predicate = {"kind": "token_in", "words": [f"t{i}" for i in range(listed)]} if listed else None
    return Explained(feature=feature, explainer=explainer, text=text, predicate=predicate)


def test_report_gives_median_length_per_explainer_and_per_feature(tmp_path: Path) -> None:
    config = BenchConfig(
        run_id="length", source="planted", evidence_id="e", features=[1, 2, 3],
        explainers=["agent", "toptokens", "broken"], scorers=["detection"], judges=["predicate"],
        per_quantile=2, non_activating=10, seed=0,
    )  # fmt: skip
    explanations = {
        ("agent", 1): _explained("agent", 1, "Animal names, such as 'cat' or 'dog'.", None),
        ("agent", 2): _explained("agent", 2, 'Years: "1984", "2001" and 8 more.', None),
        ("agent", 3): _explained("agent", 3, "Question marks ending a sentence", None),
        ("toptokens", 1): _explained("toptokens", 1, "a b c d e f g h i j k l", 10),
        ("toptokens", 2): _explained("toptokens", 2, "a b c d", 3),
    }
    scores = [
        Score(feature=f, explainer=e, scorer="detection", judge="predicate", score=0.5)
        for e, f in explanations
    ]
    summary = summarize(config, scores, explanations, {"broken:1": "down"})
    agent, top, broken = (summary.length[e] for e in config.explainers)
    # agent: words 7, 6, 5 -> 6; items 2 ('cat' or 'dog'), 10, 0 -> 2
    assert (agent.explanations, agent.median_words, agent.median_listed_items) == (3, 6, 2)
    assert (top.explanations, top.median_words, top.median_listed_items) == (2, 8, 6.5)
    assert broken.explanations == 0 and broken.median_words is None

    densities = {1: 0.01, 2: 0.002, 3: 0.03}
    report = write_report(tmp_path, config, scores, explanations, {"broken:1": "down"}, densities)
    text = report.read_text()
    assert "## Explanation length (median)" in text
    assert "| agent | 6 | 2 | 3 |" in text and "| toptokens | 8 | 6.5 | 2 |" in text
    assert "| broken | – | – | 0 |" in text
    document = json.loads((tmp_path / "results.json").read_text())
    rows = {(r["explainer"], r["feature"]): r for r in document["results"]}
    assert (rows[("agent", 2)]["words"], rows[("agent", 2)]["listed_items"]) == (6, 10)
    assert rows[("toptokens", 1)]["listed_items"] == 10
    assert document["summary"]["length"]["toptokens"]["median_listed_items"] == 6.5
