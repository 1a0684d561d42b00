"""Planted features: token-level agreement with their rules, and clear spec errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from probes.activations import FeatureActivations
from probes.planted import (
    PlantedFeatures,
    PlantedFeatureSpec,
    PlantedSpecError,
    RegexRule,
    UnknownFeatureError,
    WordsRule,
    default_spec_path,
    load_planted_spec,
)
from probes.tokenization import token_spans

# One sentence per shipped feature, each meant to make that feature fire.
EXAMPLES: dict[str, str] = {
    "word-love": "All you need is love, and a good compiler.",
    "word-computer": "The computer is never wrong; the programmer is.",
    "colour-words": "The sky turned red, then a deep blue.",
    "animal-words": "A quick brown fox jumps over the lazy dog.",
    "number-words": "Seven of the twenty hackers had three keyboards.",
    "calendar-names": "On Monday in January the build broke again.",
    "digits": "In 1984, version 42 shipped with 7 bugs.",
    "question-mark": "Is it a bug or a feature?",
    "quotation-marks": 'He called it "the Unix way" and smiled.',
    "parentheses": "Call len(items) before the loop (twice).",
    "phrase-of-course": "Of course it works on my machine, of\ncourse.",
    "phrase-at-least": "It takes at least three tries and at most five.",
    "word-after-of": "The history of science is full of surprises.",
    "quoted-text": 'She said "hello world" and "goodbye".',
    "attribution-author": "Never trust a computer you can't throw.\n\t\t-- Mark Twain, letters",
    "python-keywords": "def f(x):\n    return None if x else True",
    "dunder-names": "Override __init__ and check __name__ first.",
    "mid-sentence-capitalised": "Then the wizard met Gandalf in the tower.",
    "all-caps-words": "Read the FAQ before you ask about UNIX.",
    "negation": "I do not think so, and I don't care.",
    "first-person-pronouns": "We told me that my code was ours.",
    "ing-words": "Debugging is twice as hard as writing the code.",
    "unix-jargon": "Pipe the output of grep into the shell on Linux.",
    "animals-or-time-units": "The cat slept for three hours.",
    "question-or-never": "Why? Because I never asked.",
}

EXTRA_TEXTS = [
    "",
    " ",
    "\n\n\t",
    "héllo 🤖 世界 — naïve café",
    "\u201cCurly quotes\u201d and 'single' ones, plus a lone \" quote.",
    "catalog concatenate bobcat Cat CAT cats cat's dog-eat-dog",
    "of of of course of\tcourse at   least atleast",
    'x = "" or "abc" or " spaced "',
    "class A:\n    def __repr__(self):\n        return f'{self.x!r}'  # never?",
    "A B C D E F G HIJK lmnop QRSTUV 0 00 000 1e10 3.14159",
    "It was the best of times, it was the worst of times.\n\t-- Charles Dickens",
    "Monday's child; May I? Mayday. SUNDAY sunday",
    "one two three four hundred thousand million billion someone everyone",
    "Is it? Is it?? ?!?! never Never NEVER nevertheless",
    str.split.__doc__ or "",
    json.dumps.__doc__ or "",
    re.sub.__doc__ or "",
    dict.__doc__ or "",
]


@pytest.fixture(scope="module")
def shipped_specs() -> list[PlantedFeatureSpec]:
    return load_planted_spec(default_spec_path())


@pytest.fixture(scope="module")
def shipped(shipped_specs: list[PlantedFeatureSpec], smollm2_tokenizer: Any) -> PlantedFeatures:
    return PlantedFeatures(shipped_specs, smollm2_tokenizer)


# ---- an independent reference: per-character masks from the rule, token = any(mask) ----


def reference_patterns(spec: PlantedFeatureSpec) -> list[tuple[re.Pattern[str], int | str]]:
    """Patterns (and the group that activates) built here, not by probes.planted."""
    rule = spec.rule
    if isinstance(rule, RegexRule):
        flags = 0
        for letter in rule.flags:
            flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}[letter]
        pattern = re.compile(rule.regex, flags)
        return [(pattern, "active" if "active" in pattern.groupindex else 0)]
    flags = 0 if rule.case_sensitive else re.I
    out: list[tuple[re.Pattern[str], int | str]] = []
    for word in rule.words:
        assert re.match(r"\w", word) and re.search(r"\w$", word), "reference needs \\b to work"
        body = r"\s+".join(re.escape(part) for part in word.split())
        out.append((re.compile(rf"\b{body}\b", flags), 0))
    return out


def reference_active(spec: PlantedFeatureSpec, acts: FeatureActivations) -> list[bool]:
    mask = [False] * len(acts.text)
    for pattern, group in reference_patterns(spec):
        for m in pattern.finditer(acts.text):
            for c in range(*m.span(group)):
                mask[c] = True
    return [any(mask[t.start : t.end]) for t in acts.tokens]


def active_tokens(source: PlantedFeatures, acts: FeatureActivations, feature_id: str) -> list[str]:
    column = acts.dense([source.feature_index(feature_id)])[:, 0]
    return [t.text for t, v in zip(acts.tokens, column.tolist(), strict=True) if v > 0]


# ---- the shipped spec ----


def test_shipped_spec_is_rich_and_well_formed(shipped_specs: list[PlantedFeatureSpec]) -> None:
    ids = [s.id for s in shipped_specs]
    assert len(ids) >= 20
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", i) for i in ids), ids
    assert all(s.description.endswith(".") and len(s.description) > 10 for s in shipped_specs)
    kinds = {type(s.rule) for s in shipped_specs}
    assert kinds == {RegexRule, WordsRule}
    polysemantic = [s for s in shipped_specs if "Polysemantic" in s.description]
    assert len(polysemantic) >= 2
    # Each lists its senses, and the senses together fire exactly where the feature does.
    assert all(len(s.senses) == 2 for s in polysemantic)
    assert not any(s.senses for s in shipped_specs if s not in polysemantic)


def test_every_shipped_feature_fires_on_its_example(shipped: PlantedFeatures) -> None:
    assert set(EXAMPLES) == set(shipped.feature_names)
    ids = list(EXAMPLES)
    for feature_id, acts in zip(ids, shipped.activations(list(EXAMPLES.values())), strict=True):
        assert active_tokens(shipped, acts, feature_id), f"{feature_id} silent on {acts.text!r}"


def test_polysemantic_senses_together_are_the_feature(
    shipped: PlantedFeatures, shipped_specs: list[PlantedFeatureSpec], smollm2_tokenizer: Any
) -> None:
    texts = list(EXAMPLES.values()) + EXTRA_TEXTS
    for spec in (s for s in shipped_specs if s.senses):
        senses = [
            PlantedFeatureSpec(id=x.id, description=x.description, rule=x.rule, activation=1.0)
            for x in spec.senses
        ]
        apart = PlantedFeatures(senses, smollm2_tokenizer)
        for whole, parts in zip(shipped.activations(texts), apart.activations(texts), strict=True):
            union = parts.dense(list(range(len(senses)))).amax(dim=1) > 0
            feature = whole.dense([shipped.feature_index(spec.id)])[:, 0] > 0
            assert torch.equal(union, feature), (spec.id, whole.text)


def test_shipped_features_agree_with_their_rules_token_by_token(
    shipped: PlantedFeatures, shipped_specs: list[PlantedFeatureSpec]
) -> None:
    texts = list(EXAMPLES.values()) + EXTRA_TEXTS
    all_features = list(range(len(shipped.feature_names)))
    for acts in shipped.activations(texts):
        dense_TF = acts.dense(all_features)
        for f, spec in enumerate(shipped_specs):
            expected = torch.tensor(reference_active(spec, acts), dtype=torch.float32)
            assert torch.equal(dense_TF[:, f], expected * spec.activation), (spec.id, acts.text)


def test_tokens_are_the_subject_tokenizers(
    shipped: PlantedFeatures, smollm2_tokenizer: Any
) -> None:
    texts = list(EXAMPLES.values()) + EXTRA_TEXTS
    for text, acts in zip(texts, shipped.activations(texts), strict=True):
        assert acts.text == text
        assert acts.tokens == token_spans(smollm2_tokenizer, text)


def test_sparse_output_has_no_zeros_and_dense_agrees(shipped: PlantedFeatures) -> None:
    n_features = len(shipped.feature_names)
    for acts in shipped.activations(list(EXAMPLES.values()) + EXTRA_TEXTS):
        assert acts.token_pos_N.dtype == torch.long and acts.feature_N.dtype == torch.long
        assert bool((acts.value_N > 0).all())
        pairs = list(zip(acts.token_pos_N.tolist(), acts.feature_N.tolist(), strict=True))
        assert len(pairs) == len(set(pairs))
        assert all(0 <= p < len(acts.tokens) and 0 <= f < n_features for p, f in pairs)
        dense_TF = acts.dense(list(range(n_features)))
        assert int((dense_TF != 0).sum()) == len(pairs)
        for p, f, v in zip(
            *(t.tolist() for t in (acts.token_pos_N, acts.feature_N, acts.value_N)), strict=True
        ):
            assert dense_TF[p, f].item() == v
        assert [len(row) for row in acts.by_token()] == (dense_TF != 0).sum(dim=1).tolist()


def test_empty_inputs(shipped: PlantedFeatures) -> None:
    assert shipped.activations([]) == []
    (acts,) = shipped.activations([""])
    assert acts.tokens == [] and acts.value_N.numel() == 0
    assert acts.dense([0, 1]).shape == (0, 2)


# ---- rule semantics, on small specs ----


def make(tokenizer: Any, rule: dict[str, Any], activation: float = 2.0) -> PlantedFeatures:
    spec = PlantedFeatureSpec.model_validate(
        {"id": "f", "description": "test feature.", "rule": rule, "activation": activation}
    )
    return PlantedFeatures([spec], tokenizer)


def fired(source: PlantedFeatures, text: str) -> list[str]:
    """The active tokens of the first feature on `text`."""
    (acts,) = source.activations([text])
    return active_tokens(source, acts, source.feature_names[0])


def runs(source: PlantedFeatures, text: str, feature_id: str | None = None) -> list[str]:
    """Runs of consecutive active tokens, joined and stripped: the words that fired."""
    (acts,) = source.activations([text])
    column = acts.dense([source.feature_index(feature_id or source.feature_names[0])])[:, 0]
    out: list[str] = []
    previous = False
    for token, value in zip(acts.tokens, column.tolist(), strict=True):
        if value and previous:
            out[-1] += token.text
        elif value:
            out.append(token.text)
        previous = bool(value)
    return [r.strip() for r in out]


def test_words_are_whole_words_case_insensitive_by_default(smollm2_tokenizer: Any) -> None:
    source = make(smollm2_tokenizer, {"words": ["cat"]})
    text = "cat catalog Cat bobcat CAT cats cat's concat_cat cat2 (cat)"
    assert runs(source, text) == ["cat", "Cat", "CAT", "cat", "cat"]


def test_words_case_sensitive(smollm2_tokenizer: Any) -> None:
    source = make(smollm2_tokenizer, {"words": ["Unix"], "case_sensitive": True})
    assert runs(source, "Unix UNIX unix Unixes Unix.") == ["Unix", "Unix"]


def test_words_with_non_word_edges(smollm2_tokenizer: Any) -> None:
    source = make(smollm2_tokenizer, {"words": ["C++", "MS-DOS"], "case_sensitive": True})
    text = "C++ and MS-DOS, not C++11 or XMS-DOS."
    assert runs(source, text) == ["C++", "MS-DOS"]


def test_multi_word_entries_match_across_any_whitespace(smollm2_tokenizer: Any) -> None:
    source = make(smollm2_tokenizer, {"words": ["of course"]})
    text = "Yes, of   course.\nOf\ncourse! ofcourse of course-ish"
    assert runs(source, text) == ["of   course", "Of\ncourse", "of course"]


def test_phrases_and_long_words_mark_all_their_tokens(smollm2_tokenizer: Any) -> None:
    long_word = "antidisestablishmentarianism"
    text = f"Say {long_word}: hello world."
    source = make(smollm2_tokenizer, {"words": [long_word, "hello world"]})
    (acts,) = source.activations([text])

    def overlapping(start: int, end: int) -> list[int]:
        return [i for i, t in enumerate(acts.tokens) if t.start < end and t.end > start]

    word_tokens = overlapping(4, 4 + len(long_word))
    phrase_start = text.index("hello world")
    phrase_tokens = overlapping(phrase_start, phrase_start + len("hello world"))
    assert len(word_tokens) > 2 and len(phrase_tokens) == 2
    active = [i for i, v in enumerate(acts.dense([0])[:, 0].tolist()) if v]
    assert active == word_tokens + phrase_tokens


def test_context_rule_marks_only_the_word_after_of(shipped: PlantedFeatures) -> None:
    text = "The history of science is full of surprises, Of course; offer of"
    assert runs(shipped, text, "word-after-of") == ["science", "surprises", "course"]


def test_quoted_text_marks_the_content_not_the_marks(shipped: PlantedFeatures) -> None:
    text = 'She said "hello world" today and "bye" then.'
    assert runs(shipped, text, "quoted-text") == ["hello world", "bye"]
    (acts,) = shipped.activations([text])
    assert all('"' not in t for t in active_tokens(shipped, acts, "quoted-text")[:2])


def test_attribution_marks_the_author_only(shipped: PlantedFeatures) -> None:
    text = "Beware of bugs.\n\t\t-- Donald Knuth, in a memo\nNot -- this one"
    assert runs(shipped, text, "attribution-author") == ["Donald Knuth"]


def test_polysemantic_features_fire_on_both_rules(shipped: PlantedFeatures) -> None:
    texts = ["The horse ran.", "It took an hour.", "Really?", "I never lie.", "Nothing here."]
    acts = shipped.activations(texts)
    animals_time = [bool(active_tokens(shipped, a, "animals-or-time-units")) for a in acts]
    question_never = [bool(active_tokens(shipped, a, "question-or-never")) for a in acts]
    assert animals_time == [True, True, False, False, False]
    assert question_never == [False, False, True, True, False]


def test_zero_width_matches_and_empty_spans_activate_nothing(smollm2_tokenizer: Any) -> None:
    for regex in [r"\b", r"(?=dog)", "^", "$", r"x*"]:
        source = make(smollm2_tokenizer, {"regex": regex, "flags": "m"})
        (acts,) = source.activations(["a dog\nand a cat 🤖"])
        assert acts.value_N.numel() == 0, regex
    source = make(smollm2_tokenizer, {"regex": "x*"})
    assert runs(source, "a xx b x") == ["xx", "x"]
    # an optional `active` group that did not take part matches nothing
    source = make(smollm2_tokenizer, {"regex": r"dog(?P<active>s)?"})
    assert runs(source, "dog dogs") == ["dogs"]


def test_flags(smollm2_tokenizer: Any) -> None:
    def fires(regex: str, flags: str, text: str) -> list[str]:
        return runs(make(smollm2_tokenizer, {"regex": regex, "flags": flags}), text)

    assert fires("unix", "", "Unix unix") == ["unix"]
    assert fires("unix", "i", "Unix unix") == ["Unix unix"]
    assert fires("^b", "m", "a\nb") == ["b"]
    assert fires("^b", "", "a\nb") == []
    assert fires("a.b", "s", "a\nb") == ["a\nb"]
    assert fires("a.b", "", "a\nb") == []
    assert fires(" b # comment", "x", "xb") == ["xb"]
    assert fires("B", "ix", "xb") == ["xb"]


def test_many_matches_on_a_long_text(smollm2_tokenizer: Any) -> None:
    source = make(smollm2_tokenizer, {"regex": r"\w+"})
    text = " ".join(f"word{i} (x)" for i in range(3000))
    (acts,) = source.activations([text])
    expected = [any(c.isalnum() for c in t.text) for t in acts.tokens]
    assert acts.dense([0])[:, 0].bool().tolist() == expected


def test_feature_index(shipped: PlantedFeatures) -> None:
    assert shipped.feature_index("digits") == shipped.feature_names.index("digits")
    with pytest.raises(KeyError) as err:
        shipped.feature_index("no-such-feature")
    assert isinstance(err.value, UnknownFeatureError)
    assert "no-such-feature" in str(err.value) and "colour-words" in str(err.value)


def test_constructor_rejects_duplicates_and_nothing(smollm2_tokenizer: Any) -> None:
    spec = PlantedFeatureSpec.model_validate(
        {"id": "a", "description": "x.", "rule": {"regex": "a"}, "activation": 1.0}
    )
    with pytest.raises(ValueError, match="duplicate"):
        PlantedFeatures([spec, spec], smollm2_tokenizer)
    with pytest.raises(ValueError, match="at least one"):
        PlantedFeatures([], smollm2_tokenizer)


# ---- spec errors: each names the file, the line and what is wrong ----

GOOD = '{"id": "good", "description": "Fine.", "rule": {"regex": "a"}, "activation": 1.0}'


def line(**fields: Any) -> str:
    base: dict[str, Any] = {
        "id": "bad",
        "description": "Broken.",
        "rule": {"regex": "a"},
        "activation": 1.0,
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


@pytest.mark.parametrize(
    ("bad_line", "needles"),
    [
        ('{"id": "bad", "description": ', ["bad JSON"]),
        ('["a", "list"]', ["JSON object", "list"]),
        (line(rule={"regex": "x(["}), ["invalid regex", "x([", "unterminated"]),
        (line(rule={"regex": "a", "flags": "iq"}), ["flag", "q"]),
        (line(rule={"regex": "a b", "flags": "x"}, id="ok-x"), []),  # valid, control case
        (line(id=...), ["id", "required"]),
        (line(description=...), ["description", "required"]),
        (line(rule=...), ["rule", "required"]),
        (line(activation=...), ["activation", "required"]),
        (line(activation=0), ["activation", "greater than 0"]),
        (line(activation=-2.5), ["activation", "greater than 0"]),
        (line(activation="lots"), ["activation"]),
        (line(rule={"words": []}), ["words", "at least 1"]),
        (line(rule={"words": ["cat", "  "]}), ["words", "blank"]),
        (line(rule={"regex": "a", "words": ["a"]}), ["exactly one of 'regex'", "'words'"]),
        (line(rule={"flags": "i"}), ["exactly one of"]),
        (line(rule="cat"), ["exactly one of"]),
        (line(rule={"words": ["a"], "case_sensitve": True}), ["case_sensitve", "Extra"]),
        (line(id="has space"), ["id", "pattern"]),
        (line(description="   "), ["description", "blank"]),
        (
            line(senses=[{"id": "one", "description": "Only.", "rule": {"regex": "a"}}]),
            ["senses", "at least two"],
        ),
    ],
)
def test_spec_errors_name_file_line_and_problem(
    tmp_path: Path, bad_line: str, needles: list[str]
) -> None:
    path = tmp_path / "spec.jsonl"
    path.write_text(f"{GOOD}\n\n{bad_line}\n")
    if not needles:
        assert [s.id for s in load_planted_spec(path)] == ["good", "ok-x"]
        return
    with pytest.raises(PlantedSpecError) as err:
        load_planted_spec(path)
    message = str(err.value)
    assert message.startswith(f"{path}:3"), message
    for needle in needles:
        assert needle in message, (needle, message)


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text(f"{GOOD}\n{line(id='x')}\n{GOOD}\n")
    with pytest.raises(PlantedSpecError, match=r"dup\.jsonl:3: duplicate id 'good'.*line 1"):
        load_planted_spec(path)


@pytest.mark.parametrize("content", ["", "\n  \n\t\n"])
def test_empty_spec_file_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(PlantedSpecError, match=r"empty\.jsonl: no features"):
        load_planted_spec(path)


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_planted_spec(tmp_path / "nope.jsonl")
