"""Hard negatives: held-out contexts that look like a feature's, where it does not fire.
Random quiet contexts flatter an explanation (Paulo et al. 2024: with neighbour
distractors, detection falls from above 0.8 toward chance). Two kinds, drawn from the
evidence pool's contexts of the held-out split (every firing there is recorded, so a
pool context where the feature is absent is a true negative), in a seeded order:
- "tokens": contexts holding one of the tokens the feature fires on most (over the whole
  explain split, from the evidence's token firing table; without one, as planted
  evidence is built, over its sampled contexts);
- "similar": contexts where one of the features with the nearest decoder rows fires.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from probes.evidence.config import SCORE
from probes.evidence.store import EvidenceStore, Example, FeatureEvidence

TOP_TOKENS = 5  # the feature's most-fired tokens (explain split) a "tokens" negative holds
SIMILAR = 5  # the features with the nearest decoder rows a "similar" negative fires
KINDS = ("tokens", "similar")


def hard_negatives(
    store: EvidenceStore, evidence: FeatureEvidence, n: int, split: int = SCORE
) -> tuple[list[Example], list[str]]:
    """Up to `n` hard negatives of `evidence.feature` from `split` of `store` (half of
    each kind when both have enough), and each one's kind."""
    quiet = store.quiet_contexts(evidence.feature, split).tolist()
    top = most_fired(evidence)
    tokens = [c for c in quiet if top and np.isin(store.context_token_ids(c).numpy(), top).any()]
    near = [s.feature for s in (evidence.similar or [])[:SIMILAR]]
    firing = set(store.pool_firing(near).tolist()).difference(tokens)
    similar = [c for c in quiet if c in firing]
    take_tokens = max(n // 2, n - len(similar))
    chosen = [(c, "tokens") for c in tokens[:take_tokens]]
    chosen += [(c, "similar") for c in similar[: n - len(chosen)]]
    return [store.quiet_example(c) for c, _ in chosen], [kind for _, kind in chosen]


def most_fired(evidence: FeatureEvidence) -> list[int]:
    """Ids of the TOP_TOKENS tokens the feature fires on most in the explain split."""
    if evidence.token_firing is not None:
        return [t.token_id for t in evidence.token_firing[:TOP_TOKENS]]
    examples = evidence.top + [e for b in evidence.quantiles for e in b.examples]
    fired = Counter(t for e in examples for t, a in zip(e.token_ids, e.acts, strict=True) if a > 0)
    return [t for t, _ in fired.most_common(TOP_TOKENS)]
