r"""Planted features: ground-truth features defined by rules over the text, not by a model.

A JSONL spec holds one feature per line:

    {"id": "colour-words", "description": "Names of colours.",
     "rule": {"words": ["red", "blue"], "case_sensitive": false}, "activation": 5.0}
    {"id": "word-never", "description": "The word never.",
     "rule": {"regex": "\\bnever\\b", "flags": "i"}, "activation": 8.0}

A token's activation is the feature's `activation` when the token's character span
overlaps a match of the rule, else 0. A `words` rule matches whole words (not next to a
letter, digit or underscore); whitespace inside an entry matches any run of whitespace.
A `regex` rule may mark the part of its match that activates with a named group
`(?P<active>...)`; otherwise the whole match activates. Rules run under a time limit
(probes.regex_limit): one that backtracks catastrophically is refused when the spec is
read if stress texts show it, else when it runs past the limit. Zero-width matches and tokens
with empty spans never activate. Tokens come from the subject model's tokenizer, so
planted features speak the same `FeatureSource` interface as a model + SAE.
"""

from __future__ import annotations

import json
import math
import os
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import regex
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from errors import UserError
from probes.activations import FeatureActivations, TokenSpan
from probes.regex_limit import LimitedPattern, RegexTimeLimitError, check_backtracking, limited

ACTIVE_GROUP = "active"
_FLAG_BITS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
_RULE_FLAGS = re.IGNORECASE | re.MULTILINE | re.DOTALL | re.VERBOSE  # same bits in `regex`
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
_TOKENIZE_CHUNK = 256


class PlantedSpecError(UserError):
    """A planted-feature spec file is malformed; the message names the file and line."""


class UnknownFeatureError(UserError, KeyError):
    """A feature id that the source does not define; the message lists the valid ids."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RegexRule(BaseModel):
    """Tokens overlapping a match of `regex` (or of its `active` group) activate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    regex: str = Field(min_length=1)
    flags: str = Field(default="", description="regex flag letters: any of i, m, s, x")

    @field_validator("flags")
    @classmethod
    def _known_flags(cls, flags: str) -> str:
        unknown = sorted(set(flags) - set(_FLAG_BITS))
        if unknown:
            raise UserError(
                f"unknown regex flag(s) {''.join(unknown)!r}; allowed letters: "
                f"{''.join(_FLAG_BITS)}"
            )
        return flags

    @model_validator(mode="after")
    def _compiles(self) -> RegexRule:
        try:
            check_backtracking(limited_rule(self.compile()))
        except (re.error, regex.error) as err:
            raise UserError(f"invalid regex {self.regex!r}: {err}") from None
        return self

    def compile(self) -> re.Pattern[str]:
        bits = re.NOFLAG
        for letter in self.flags:
            bits |= _FLAG_BITS[letter]
        return re.compile(self.regex, bits)


class WordsRule(BaseModel):
    """Tokens overlapping a whole-word occurrence of any entry of `words` activate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    words: list[str] = Field(min_length=1)
    case_sensitive: bool = False

    @field_validator("words")
    @classmethod
    def _no_blank_words(cls, words: list[str]) -> list[str]:
        blank = [i for i, w in enumerate(words) if not w.strip()]
        if blank:
            raise UserError(f"words list has blank entries at position(s) {blank}")
        return words

    def compile(self) -> re.Pattern[str]:
        entries = sorted({" ".join(w.split()) for w in self.words}, key=lambda w: (-len(w), w))
        alternatives = [r"\s+".join(re.escape(part) for part in w.split(" ")) for w in entries]
        flags = 0 if self.case_sensitive else re.IGNORECASE
        return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", flags)


def _rule_kind(value: Any) -> str | None:
    """Which rule a raw or parsed value is; None (an error) unless exactly one key is set."""
    if isinstance(value, RegexRule | WordsRule):
        return "regex" if isinstance(value, RegexRule) else "words"
    if not isinstance(value, dict):
        return None
    kinds = [k for k in ("regex", "words") if k in value]
    return kinds[0] if len(kinds) == 1 else None


Rule = Annotated[
    Annotated[RegexRule, Tag("regex")] | Annotated[WordsRule, Tag("words")],
    Discriminator(
        _rule_kind,
        custom_error_type="invalid_rule",
        custom_error_message=(
            "rule must be an object with exactly one of 'regex' (plus optional 'flags') "
            "or 'words' (plus optional 'case_sensitive')"
        ),
    ),
]


class Sense(BaseModel):
    """One of a polysemantic feature's unrelated meanings, for judging explanations
    (which should name each); the feature itself fires on its `rule`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_ID_PATTERN)
    description: str = Field(min_length=1)
    rule: Rule


class PlantedFeatureSpec(BaseModel):
    """One planted feature: an id, a plain-English description, a rule, an activation,
    and, for a polysemantic feature, its senses (at least two)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_ID_PATTERN)
    description: str = Field(min_length=1)
    rule: Rule
    activation: float = Field(gt=0)
    senses: tuple[Sense, ...] = ()

    @field_validator("senses")
    @classmethod
    def _two_or_more(cls, senses: tuple[Sense, ...]) -> tuple[Sense, ...]:
        if len(senses) == 1:
            raise UserError("a polysemantic feature lists at least two senses (or none)")
        return senses

    @field_validator("description")
    @classmethod
    def _not_blank(cls, description: str) -> str:
        if not description.strip():
            raise UserError("description is blank")
        return description

    @field_validator("activation")
    @classmethod
    def _finite(cls, activation: float) -> float:
        if not math.isfinite(activation):
            raise UserError("activation must be a finite number")
        return activation


def default_spec_path() -> Path:
    """The planted-feature spec shipped with glossator."""
    return _shipped("planted_features.jsonl")


def concept_spec_path() -> Path:
    """Planted features whose rule is a whole concept (every animal, every garment, ...:
    hundreds to thousands of words), written by scripts/make_concept_features.py."""
    return _shipped("concept_features.jsonl")


def concept_sentences_path() -> Path:
    """A JSONL corpus of sentences, each with one member of one concept feature that the
    default corpus never contains: score concept explanations on it (`--score-corpus`)."""
    return _shipped("concept_sentences.jsonl")


def _shipped(name: str) -> Path:
    resource = files("probes").joinpath("data", name)
    if not isinstance(resource, Path):
        raise RuntimeError(
            f"the shipped {name} is not a plain file ({resource!r}); install unzipped"
        )
    return resource


def load_planted_spec(path: str | os.PathLike[str]) -> list[PlantedFeatureSpec]:
    """Parse a JSONL spec; blank lines are skipped. Raises PlantedSpecError on any problem."""
    path = Path(path)
    specs: list[PlantedFeatureSpec] = []
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            spec = _parse_line(path, lineno, line)
            if spec.id in first_line:
                raise PlantedSpecError(
                    f"{path}:{lineno}: duplicate id {spec.id!r} "
                    f"(first defined on line {first_line[spec.id]})"
                )
            first_line[spec.id] = lineno
            specs.append(spec)
    if not specs:
        raise PlantedSpecError(f"{path}: no features defined (the spec file is empty)")
    return specs


def _parse_line(path: Path, lineno: int, line: str) -> PlantedFeatureSpec:
    where = f"{path}:{lineno}"
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as err:
        raise PlantedSpecError(f"{where}: bad JSON: {err.msg} at character {err.pos + 1}") from None
    if not isinstance(raw, dict):
        raise PlantedSpecError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    try:
        return PlantedFeatureSpec.model_validate(raw)
    except ValidationError as err:
        label = f" (id {raw['id']!r})" if isinstance(raw.get("id"), str) else ""
        problems = "; ".join(_describe_error(e) for e in err.errors())
        raise PlantedSpecError(f"{where}{label}: {problems}") from None


def _describe_error(error: Any) -> str:
    loc = list(error["loc"])
    if len(loc) >= 3 and loc[0] == "rule":
        del loc[1]  # the union tag ("regex" / "words"), which only repeats a field name
    field = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc).lstrip(".")
    msg = str(error["msg"]).removeprefix("Value error, ")
    return f"{field or 'line'}: {msg}"


@dataclass(frozen=True)
class _TokenIndex:
    """Tokens sorted by start, for finding the tokens that overlap a character interval."""

    order: list[int]  # token positions, sorted by (start, end)
    starts: list[int]
    ends: list[int]
    max_end: list[int]  # running max of ends: non-decreasing, so bisectable

    @classmethod
    def build(cls, tokens: Sequence[TokenSpan]) -> _TokenIndex:
        order = sorted(range(len(tokens)), key=lambda i: (tokens[i].start, tokens[i].end))
        starts = [tokens[i].start for i in order]
        ends = [tokens[i].end for i in order]
        max_end: list[int] = []
        for end in ends:
            max_end.append(max(end, max_end[-1]) if max_end else end)
        return cls(order, starts, ends, max_end)

    def overlapping(self, start: int, end: int) -> Iterator[int]:
        """Positions of non-empty tokens whose span overlaps [start, end)."""
        hi = bisect_left(self.starts, end)  # tokens from hi on start at or after `end`
        lo = bisect_right(self.max_end, start)  # tokens before lo all end at or before `start`
        for i in range(lo, hi):
            if self.ends[i] > start and self.ends[i] > self.starts[i]:
                yield self.order[i]


def limited_rule(pattern: re.Pattern[str]) -> LimitedPattern:
    """A rule's compiled regex, to run under the time limit."""
    return limited(pattern.pattern, pattern.flags & _RULE_FLAGS)


def match_spans(pattern: re.Pattern[str] | LimitedPattern, text: str) -> Iterator[tuple[int, int]]:
    """Non-empty character spans that activate: each match, or its `active` group. The
    search runs under the time limit (RegexTimeLimitError past it)."""
    if not isinstance(pattern, LimitedPattern):
        pattern = limited_rule(pattern)
    group: int | str = ACTIVE_GROUP if ACTIVE_GROUP in pattern.groupindex else 0
    for m in pattern.finditer(text):
        start, end = m.span(group)
        if end > start:  # zero-width matches (and an unmatched group: -1, -1) overlap nothing
            yield start, end


class PlantedFeatures:
    """A FeatureSource whose features are the rules of a planted spec."""

    def __init__(self, specs: Sequence[PlantedFeatureSpec], tokenizer: Any) -> None:
        if not specs:
            raise UserError("PlantedFeatures needs at least one feature spec")
        ids = [s.id for s in specs]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise UserError(f"duplicate planted feature ids: {duplicates}")
        self.specs = list(specs)
        self.tokenizer = tokenizer
        self._names = ids
        self._index = {name: i for i, name in enumerate(ids)}
        self._patterns = [limited_rule(s.rule.compile()) for s in specs]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], tokenizer: Any) -> PlantedFeatures:
        return cls(load_planted_spec(path), tokenizer)

    @property
    def feature_names(self) -> list[str]:
        return list(self._names)

    def feature_index(self, feature_id: str) -> int:
        try:
            return self._index[feature_id]
        except KeyError:
            raise UnknownFeatureError(
                f"unknown planted feature {feature_id!r}; valid ids: {', '.join(self._names)}"
            ) from None

    def activations(self, texts: Sequence[str]) -> list[FeatureActivations]:
        texts = list(texts)
        out: list[FeatureActivations] = []
        for lo in range(0, len(texts), _TOKENIZE_CHUNK):
            chunk = texts[lo : lo + _TOKENIZE_CHUNK]
            for text, tokens in zip(chunk, _token_spans_batch(self.tokenizer, chunk), strict=True):
                out.append(self._one_text(text, tokens))
        return out

    def _one_text(self, text: str, tokens: list[TokenSpan]) -> FeatureActivations:
        index = _TokenIndex.build(tokens)
        entries: list[tuple[int, int]] = []  # (token position, feature)
        for feature, pattern in enumerate(self._patterns):
            active: set[int] = set()
            try:
                for start, end in match_spans(pattern, text):
                    active.update(index.overlapping(start, end))
            except RegexTimeLimitError as err:
                raise RegexTimeLimitError(
                    f"planted feature {self._names[feature]!r}: {err}"
                ) from None
            entries.extend((pos, feature) for pos in active)
        entries.sort()
        values = [self.specs[f].activation for _, f in entries]
        return FeatureActivations(
            text=text,
            tokens=tokens,
            token_pos_N=torch.tensor([p for p, _ in entries], dtype=torch.long),
            feature_N=torch.tensor([f for _, f in entries], dtype=torch.long),
            value_N=torch.tensor(values, dtype=torch.float32),
        )


def _token_spans_batch(tokenizer: Any, texts: list[str]) -> list[list[TokenSpan]]:
    """`probes.tokenization.token_spans` for many texts in one tokenizer call."""
    if not texts:
        return []
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return [
        [TokenSpan(text[s:e], s, e) for s, e in offsets]
        for text, offsets in zip(texts, enc["offset_mapping"], strict=True)
    ]
