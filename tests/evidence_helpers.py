"""Evidence built by hand for the agent's tests."""

from __future__ import annotations

from probes.evidence.store import Example


def example(tokens: list[str], acts: list[float]) -> Example:
    """A context of `tokens` with the feature's activation on each."""
    return Example(
        context=0, text_index=0, start=0, token_ids=[0] * len(tokens), tokens=tokens,
        acts=acts, max_act=max(acts, default=0.0),
    )  # fmt: skip
