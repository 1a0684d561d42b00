"""Rule regexes run under a time limit (issue 16, item 5): a rule that backtracks
catastrophically is refused with an error naming it, when its spec is read if stress
texts show it, else when a search runs past the limit; never a hang, never a traceback.
Rules whose shape bounds their work run untimed on short texts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from predicates.language import TokenView, from_dict
from probes.planted import PlantedFeatures, PlantedSpecError, load_planted_spec
from probes.regex_bounds import untimed_length
from probes.regex_limit import RegexTimeLimitError, limited
from tests.cli_helpers import run_cli

# (a|aa)+ matches n a's in Fibonacci(n) ways: on 64 of them the stdlib searches for years.
EXPONENTIAL = "(a|aa)+$"
# Passes the stress texts (one character repeated) but not "abab...!" (2**n ways).
HIDDEN = "^(ab|a(b))+$"
# Each a matched two ways: 2**n tries on n a's that do not end the text.
TWO_WAYS = "(a|a)+"
QUICK_S = 10  # far below a hang, far above the 1 s limit on a busy machine


def write_spec(path: Path, regex: str) -> Path:
    rule = {"id": "evil", "description": "a rule that backtracks", "activation": 2.0}
    path.write_text(json.dumps({**rule, "rule": {"regex": regex}}) + "\n")
    return path


def test_a_catastrophic_rule_is_refused_when_the_spec_is_read(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.jsonl", EXPONENTIAL)
    start = time.monotonic()
    with pytest.raises(PlantedSpecError) as refused:
        load_planted_spec(spec)
    assert time.monotonic() - start < QUICK_S
    message = str(refused.value)
    assert "spec.jsonl:1" in message and "'evil'" in message and EXPONENTIAL in message
    assert "backtracks catastrophically" in message and "rewrite it" in message


def test_a_rule_the_stress_texts_miss_is_refused_when_it_runs(
    tmp_path: Path, smollm2_tokenizer: Any
) -> None:
    planted = PlantedFeatures(
        load_planted_spec(write_spec(tmp_path / "s.jsonl", HIDDEN)), smollm2_tokenizer
    )
    assert set(planted.activations(["abab"])[0].value_N.tolist()) == {2.0}
    start = time.monotonic()
    with pytest.raises(RegexTimeLimitError) as refused:
        planted.activations(["ab" * 30 + "!"])
    assert time.monotonic() - start < QUICK_S
    message = str(refused.value)
    assert "planted feature 'evil'" in message and HIDDEN in message
    assert "time limit" in message and "backtracks catastrophically" in message


def test_the_issue_rule_runs_quickly_on_the_command_line(
    tmp_path: Path, smollm2_tokenizer: Any
) -> None:
    """`(a+)+$` on 30 characters hung `glossator planted`; a rule found only when it runs
    is a one-line error with exit code 2."""
    smollm2_tokenizer.save_pretrained(tmp_path / "tokenizer")
    env = {"GLOSSATOR_MODEL": str(tmp_path / "tokenizer"), "GLOSSATOR_DATA_DIR": str(tmp_path)}
    issue = write_spec(tmp_path / "issue.jsonl", "(a+)+$")
    ran = run_cli("planted", "a" * 30 + "!", "--spec", str(issue), "--json", env=env)
    assert ran.returncode == 0, ran.stderr
    hidden = write_spec(tmp_path / "hidden.jsonl", HIDDEN)
    refused = run_cli("planted", "ab" * 30 + "!", "--spec", str(hidden), env=env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "planted feature 'evil'" in refused.stderr and "time limit" in refused.stderr
    caught = run_cli(
        "planted", "aaa", "--spec", str(write_spec(tmp_path / "e.jsonl", EXPONENTIAL)), env=env
    )
    assert caught.returncode == 2 and "backtracks catastrophically" in caught.stderr


@pytest.mark.parametrize(
    "predicate",
    [
        {"kind": "token_regex", "pattern": TWO_WAYS},
        {"kind": "word_regex", "pattern": TWO_WAYS},
        {"kind": "preceded", "pattern": TWO_WAYS},
    ],
)
def test_a_stored_predicate_that_backtracks_is_refused(predicate: dict[str, object]) -> None:
    """Predicates come back from stored explanations and HTTP requests as JSON."""
    parsed = from_dict(predicate)
    view = TokenView.of([" " + "a" * 37 + "b!", " word"])  # Preceded reads 40 characters
    start = time.monotonic()
    with pytest.raises(RegexTimeLimitError, match="backtracks catastrophically") as refused:
        parsed.evaluate(view)
    assert time.monotonic() - start < QUICK_S
    assert str(predicate["pattern"]) in str(refused.value)


def test_a_predicate_with_a_broken_regex_is_a_validation_error() -> None:
    with pytest.raises(ValueError, match="invalid regex"):
        from_dict({"kind": "token_regex", "pattern": "(unclosed"})


def test_only_shapes_that_bound_their_work_run_untimed() -> None:
    for unbounded in ("(a+)+$", EXPONENTIAL, HIDDEN, r"(\w)\1", r"(.*a){20}", r"\p{L}+"):
        assert untimed_length(unbounded, 0) == 0, unbounded
    # the synthesis' own classes: untimed on any token
    assert untimed_length(r"\S*x\S*", 0) >= 100
    assert untimed_length(r"(?i)[a-z]*ing[a-z]*", 0) >= 100
    assert untimed_length(r"(?:of )$", 0) >= 10_000
    # many repetitions in a row: polynomial, but of high degree, so timed on longer texts
    many = "a*" * 10 + "b"
    assert untimed_length(many, 0) < 10
    assert limited(many).search("a" * 60) is None  # timed, and quick


def test_untimed_and_timed_searches_agree() -> None:
    pattern = limited(r"\b[a-z]+ing\b")
    short = "singing and dancing"
    long = " ".join([short] * 2000)
    assert pattern.untimed < len(long)
    assert [m.span() for m in pattern.finditer(short)] == [(0, 7), (12, 19)]
    assert len(list(pattern.finditer(long))) == 4000
