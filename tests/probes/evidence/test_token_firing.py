"""Per-feature token firing counts over the whole explain split, against brute force."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from probes.evidence.config import EXPLAIN
from probes.evidence.token_firing import TokenFiring
from tests.probes.evidence.test_build import brute, tiny_build  # noqa: F401 (fixture)


def test_counts_equal_brute_force_across_merges_and_a_resume() -> None:
    gen = torch.Generator().manual_seed(0)
    n_features, vocab = 7, 30
    batches = [
        (
            torch.randint(0, n_features, (n,), generator=gen),
            torch.randint(0, vocab, (n,), generator=gen),
            torch.randint(0, vocab, (3 * n,), generator=gen),
        )
        for n in (0, 50, 13, 200, 1, 77)
    ]
    acc = TokenFiring(n_features, merge_every=40)  # several merges
    for i, batch in enumerate(batches):
        acc.update(*batch)
        if i == 3:  # checkpoint and resume into a fresh accumulator
            state = acc.state_dict()
            acc = TokenFiring(n_features, merge_every=40)
            acc.load_state_dict(state)
    pairs = Counter(
        (f, t) for fs, ts, _ in batches for f, t in zip(fs.tolist(), ts.tolist(), strict=True)
    )
    seen = Counter(t for _, _, read in batches for t in read.tolist())
    out = acc.finish(n=4)
    assert out["ids"].shape == out["fires"].shape == (n_features, 4)
    for f in range(n_features):
        row = sorted(((-c, t) for (g, t), c in pairs.items() if g == f))[:4]
        expected_ids = [t for _, t in row] + [-1] * (4 - len(row))
        assert out["ids"][f].tolist() == expected_ids
        assert out["fires"][f].tolist() == [-c for c, _ in row] + [0] * (4 - len(row))
    assert out["count"].tolist() == [seen[t] for t in range(out["count"].numel())]


def test_store_token_firing_equals_the_pass_entries(tiny_build: Any) -> None:  # noqa: F811
    store, recording, texts = tiny_build
    truth = brute(recording, texts)
    split_C = truth["split_C"]
    token_ids = torch.cat([c.token_ids for c in recording.chunks]).long()
    offsets = [0]
    for c in recording.chunks:
        offsets += (c.offsets[1:] + offsets[-1]).tolist()
    starts = torch.tensor(offsets[:-1])
    fires: Counter[tuple[int, int]] = Counter()
    for b in recording.batches:
        for c, p, f, v in zip(
            b.context_N.tolist(),
            b.pos_N.tolist(),
            b.feature_N.tolist(),
            b.value_N.tolist(),
            strict=True,
        ):
            if v > 0 and int(split_C[c]) == EXPLAIN:
                fires[(f, int(token_ids[starts[c] + p]))] += 1
    explain_tokens = Counter(
        int(t)
        for c in range(len(split_C))
        if int(split_C[c]) == EXPLAIN
        for t in token_ids[offsets[c] : offsets[c + 1]].tolist()
    )
    checked = 0
    for f in store.firing_features():
        listed = store.token_firing(f)
        assert listed is not None
        expected = sorted(((-n, t) for (g, t), n in fires.items() if g == f))[: len(listed)]
        assert [(e.token_id, e.fires) for e in listed] == [(t, -n) for n, t in expected]
        assert all(e.occurrences == explain_tokens[e.token_id] >= e.fires for e in listed)
        assert all(e.token == store.token_string(e.token_id) for e in listed)
        checked += bool(listed)
    assert checked > 0
    assert store.feature(store.firing_features()[0]).token_firing == store.token_firing(
        store.firing_features()[0]
    )
