"""Texts the rules reasoner draws experiments from: lines of explain-split contexts
(never the scoring split), as token views, each short enough to be a test input."""

from __future__ import annotations

import random
from collections.abc import Iterator

from predicates.language import TokenView
from probes.evidence.config import EXPLAIN
from probes.evidence.store import EvidenceStore

MIN_CHARS, MAX_CHARS = 20, 200


def retrieval_pool(store: EvidenceStore, n_contexts: int = 3000, seed: int = 0) -> list[TokenView]:
    """Lines (split at newline tokens) of a seeded sample of explain-split contexts."""
    return [
        line for context in _shuffled(store, seed)[:n_contexts] for line in _lines(store, context)
    ]


def remaining_lines(
    store: EvidenceStore, n_contexts: int = 3000, seed: int = 0
) -> Iterator[TokenView]:
    """The lines of the explain-split contexts `retrieval_pool` left out, read lazily in
    a fixed order: where a rare word's lines are, once the sample has too few."""
    for context in _shuffled(store, seed)[n_contexts:]:
        yield from _lines(store, context)


def _shuffled(store: EvidenceStore, seed: int) -> list[int]:
    contexts: list[int] = store.contexts_in_split(EXPLAIN).tolist()
    random.Random(seed).shuffle(contexts)
    return contexts


def _lines(store: EvidenceStore, context: int) -> Iterator[TokenView]:
    line: list[str] = []
    for token in [*store.context_tokens(context), "\n"]:
        if "\n" not in token:
            line.append(token)
            continue
        text = "".join(line).strip()
        if MIN_CHARS <= len(text) <= MAX_CHARS:
            yield TokenView.of(_trimmed(line))
        line = []


def _trimmed(tokens: list[str]) -> list[str]:
    """Drop leading and trailing whitespace-only tokens, and the first token's leading
    spaces, so the text reads as a line on its own."""
    while tokens and not tokens[0].strip():
        tokens = tokens[1:]
    while tokens and not tokens[-1].strip():
        tokens = tokens[:-1]
    return [tokens[0].lstrip(), *tokens[1:]] if tokens else tokens
