"""Streaming accumulators vs brute force on small random sparse data with many ties."""

from __future__ import annotations

import bisect
import math
from collections import defaultdict

import pytest
import torch
from torch import Tensor

from probes.evidence.accumulators import StreamingSample, StreamingTopK, pair_priority
from probes.evidence.stats import FeatureStats

N_FEATURES = 50
Batch = tuple[Tensor, Tensor, Tensor]

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
        ],
    ),
]


def make_batches(seed: int, n_contexts: int = 120, tokens_per_context: int = 6) -> list[Batch]:
    """COO batches of different sizes; each context wholly inside one batch. Values come
    from a small set so that ties within and across contexts are common."""
    gen = torch.Generator().manual_seed(seed)
    context_ids = torch.randperm(10_000, generator=gen)[:n_contexts] * 7 + 3
    levels = torch.tensor([0.25, 0.5, 1.0, 1.0, 2.0, 3.0])
    entries: list[Batch] = []
    for context in context_ids.tolist():
        fires_TF = torch.rand(tokens_per_context, N_FEATURES, generator=gen) < 0.15
        token_T, feature_T = fires_TF.nonzero(as_tuple=True)
        value_T = levels[torch.randint(len(levels), (len(token_T),), generator=gen)]
        entries.append((torch.full_like(feature_T, context), feature_T, value_T))
    batches: list[Batch] = []
    start = 0
    sizes = [1, 7, 30, 2, 45, 13]
    i = 0
    while start < len(entries):
        group = entries[start : start + sizes[i % len(sizes)]]
        start += len(group)
        i += 1
        context_N, feature_N, value_N = (torch.cat(parts) for parts in zip(*group, strict=True))
        perm = torch.randperm(len(feature_N), generator=gen)
        batches.append((context_N[perm], feature_N[perm], value_N[perm]))
    return batches


def merge(batches: list[Batch]) -> Batch:
    context_N, feature_N, value_N = (torch.cat(parts) for parts in zip(*batches, strict=True))
    return context_N, feature_N, value_N


def pair_maxima(batches: list[Batch]) -> dict[tuple[int, int], float]:
    best: dict[tuple[int, int], float] = {}
    for context_N, feature_N, value_N in batches:
        for c, f, v in zip(context_N.tolist(), feature_N.tolist(), value_N.tolist(), strict=True):
            best[(f, c)] = max(best.get((f, c), 0.0), v)
    return best


def expected_rows(ranked: dict[int, list[tuple[int, float]]], k: int) -> tuple[Tensor, Tensor]:
    values_FK = torch.zeros(N_FEATURES, k)
    contexts_FK = torch.full((N_FEATURES, k), -1, dtype=torch.int64)
    for f, row in ranked.items():
        for j, (c, v) in enumerate(row[:k]):
            values_FK[f, j], contexts_FK[f, j] = v, c
    return values_FK, contexts_FK


def brute_topk(batches: list[Batch], k: int) -> tuple[Tensor, Tensor]:
    per_feature: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for (f, c), v in pair_maxima(batches).items():
        per_feature[f].append((c, v))
    return expected_rows(
        {f: sorted(row, key=lambda cv: (-cv[1], cv[0])) for f, row in per_feature.items()}, k
    )


def run(acc: StreamingTopK | StreamingSample, batches: list[Batch], device: str = "cpu") -> None:
    for context_N, feature_N, value_N in batches:
        acc.update(context_N.to(device), feature_N.to(device), value_N.to(device))


def assert_rows(
    acc: StreamingTopK | StreamingSample, values_FK: Tensor, contexts_FK: Tensor
) -> None:
    """The selection's rows, in ranking order, are exactly these."""
    got_values_FK, got_contexts_FK, _ = acc.ordered()
    assert torch.equal(got_contexts_FK.cpu(), contexts_FK)
    assert torch.equal(got_values_FK.cpu(), values_FK)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [1, 5, 40])
def test_topk_equals_brute_force(device: str, k: int) -> None:
    batches = make_batches(seed=k)
    acc = StreamingTopK(N_FEATURES, k).to(device)
    run(acc, batches, device)
    values_FK, contexts_FK = brute_topk(batches, k)
    assert_rows(acc, values_FK, contexts_FK)


def test_topk_exact_when_contexts_split_across_batches() -> None:
    batches = make_batches(seed=11)
    context_N, feature_N, value_N = merge(batches)
    split = [(context_N[i : i + 97], feature_N[i : i + 97], value_N[i : i + 97])
             for i in range(0, len(context_N), 97)]  # fmt: skip
    acc = StreamingTopK(N_FEATURES, 6)
    run(acc, split)
    values_FK, contexts_FK = brute_topk(batches, 6)
    assert_rows(acc, values_FK, contexts_FK)


def test_sample_matches_priority_order_and_values() -> None:
    batches = make_batches(seed=3)
    acc = StreamingSample(N_FEATURES, 8, seed=1234)
    run(acc, batches)
    per_feature: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for (f, c), v in pair_maxima(batches).items():
        per_feature[f].append((c, v))

    def priority(f: int, c: int) -> int:
        return int(pair_priority(1234, torch.tensor([f]), torch.tensor([c])).item())

    ranked = {f: sorted(row, key=lambda cv: (priority(f, cv[0]), cv[0]))
              for f, row in per_feature.items()}  # fmt: skip
    values_FK, contexts_FK = expected_rows(ranked, 8)
    assert_rows(acc, values_FK, contexts_FK)


def test_sample_independent_of_batch_split() -> None:
    batches = make_batches(seed=5)
    one = StreamingSample(N_FEATURES, 6, seed=9)
    run(one, [merge(batches)])
    many = StreamingSample(N_FEATURES, 6, seed=9)
    run(many, list(reversed(batches)))
    assert all(torch.equal(a, b) for a, b in zip(one.ordered(), many.ordered(), strict=True))
    other_seed = StreamingSample(N_FEATURES, 6, seed=10)
    run(other_seed, batches)
    assert not torch.equal(one.ordered()[1], other_seed.ordered()[1])


def test_sample_is_roughly_uniform_over_seeds() -> None:
    batches = make_batches(seed=7, n_contexts=40)
    merged = merge(batches)
    activating: dict[int, set[int]] = defaultdict(set)
    for f, c in pair_maxima(batches):
        activating[f].add(c)
    k, n_seeds = 4, 300
    picks: dict[tuple[int, int], int] = defaultdict(int)
    for seed in range(n_seeds):
        acc = StreamingSample(N_FEATURES, k, seed=seed)
        acc.update(*merged)
        for f, row in enumerate(acc.ordered()[1].tolist()):
            chosen = [c for c in row if c >= 0]
            assert len(chosen) == min(k, len(activating[f]))
            assert set(chosen) <= activating[f]
            for c in chosen:
                picks[(f, c)] += 1
    chi2, n_cells = 0.0, 0
    for f, contexts in activating.items():
        if len(contexts) <= k:
            assert all(picks[(f, c)] == n_seeds for c in contexts)
            continue
        expected = n_seeds * k / len(contexts)
        for c in contexts:
            assert 0.4 * expected < picks[(f, c)] < 1.6 * expected
            chi2 += (picks[(f, c)] - expected) ** 2 / expected
            n_cells += 1
    assert n_cells > 200
    assert 0.5 < chi2 / n_cells < 1.4  # ~ (1 - k/n) for a uniform sample


def test_stats_equal_brute_force() -> None:
    batches = make_batches(seed=2)
    stats = FeatureStats(N_FEATURES, n_bins=5, lo=0.3, hi=2.5)
    n_tokens = 0
    for i, (_, feature_N, value_N) in enumerate(batches):
        stats.update(feature_N, value_N, n_tokens=len(feature_N) + 10 * i)
        n_tokens += len(feature_N) + 10 * i
    edges = stats.bin_edges.tolist()
    assert len(edges) == 6 and math.isclose(edges[0], 0.3) and math.isclose(edges[-1], 2.5)
    count = [0] * N_FEATURES
    total = [0.0] * N_FEATURES
    top = [0.0] * N_FEATURES
    hist = [[0] * 5 for _ in range(N_FEATURES)]
    for _, feature_N, value_N in batches:
        for f, v in zip(feature_N.tolist(), value_N.tolist(), strict=True):
            count[f] += 1
            total[f] += v
            top[f] = max(top[f], v)
            hist[f][bisect.bisect_right(edges[1:-1], v)] += 1
    assert int(stats.tokens_seen) == n_tokens
    assert stats.count_F.tolist() == count
    assert stats.hist_FB.tolist() == hist
    assert stats.max_F.tolist() == top
    assert torch.allclose(stats.sum_F, torch.tensor(total, dtype=torch.float64))
    assert torch.allclose(stats.density_F, torch.tensor(count, dtype=torch.float64) / n_tokens)
    fired = torch.tensor(count) > 0
    mean = torch.tensor(total, dtype=torch.float64)[fired] / torch.tensor(count)[fired]
    assert torch.allclose(stats.mean_F[fired], mean)
    assert stats.hist_FB.sum(dim=1).tolist() == count


def test_stats_ignore_nonpositive_values_and_clamp_bins() -> None:
    stats = FeatureStats(3, n_bins=4, lo=1.0, hi=100.0)
    stats.update(torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0.0, 1e-3, 5e3, -1.0, 10.0]), 7)
    assert stats.count_F.tolist() == [1, 1, 1]
    assert stats.hist_FB.tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
    assert stats.mean_F.tolist() == pytest.approx([1e-3, 5e3, 10.0])


def test_state_dict_round_trip_mid_stream() -> None:
    batches = make_batches(seed=4)
    half = len(batches) // 2

    def build() -> tuple[StreamingTopK, StreamingSample, FeatureStats]:
        return (
            StreamingTopK(N_FEATURES, 7),
            StreamingSample(N_FEATURES, 7, seed=3),
            FeatureStats(N_FEATURES, 6, 0.1, 4.0),
        )

    def feed(accs: tuple[StreamingTopK, StreamingSample, FeatureStats], part: list[Batch]) -> None:
        for context_N, feature_N, value_N in part:
            accs[0].update(context_N, feature_N, value_N)
            accs[1].update(context_N, feature_N, value_N)
            accs[2].update(feature_N, value_N, len(feature_N) + 3)

    straight = build()
    feed(straight, batches)
    first = build()
    feed(first, batches[:half])
    saved = [acc.state_dict() for acc in first]
    feed(first, batches[half:])  # keeps going: the saved copies must not move
    resumed = build()
    resumed[0].load_state_dict(saved[0])
    resumed[1].load_state_dict(saved[1])
    resumed[2].load_state_dict(saved[2])
    feed(resumed, batches[half:])
    pairs = [
        (a.state_dict(), b.state_dict()) for a, b in zip(straight[:2], resumed[:2], strict=True)
    ]
    pairs.append((straight[2].state_dict(), resumed[2].state_dict()))
    for sa, sb in pairs:
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[name], sb[name]) for name in sa)


def test_load_rejects_other_config_and_bad_input() -> None:
    state = StreamingSample(N_FEATURES, 4, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        StreamingSample(N_FEATURES, 4, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="k="):
        StreamingTopK(N_FEATURES, 5).load_state_dict(state)
    acc = StreamingTopK(N_FEATURES, 2)
    with pytest.raises(ValueError, match="feature indices"):
        acc.update(torch.tensor([0]), torch.tensor([N_FEATURES]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="same length"):
        acc.update(torch.tensor([0, 1]), torch.tensor([0]), torch.tensor([1.0]))


def make_positioned_batches(seed: int, width: int) -> tuple[list[Batch], list[Tensor]]:
    """Like make_batches, plus each entry's token position inside its context."""
    batches = make_batches(seed, tokens_per_context=width)
    gen = torch.Generator().manual_seed(seed + 1)
    positioned: list[Batch] = []
    positions: list[Tensor] = []
    for context_N, feature_N, value_N in batches:
        # a random position per entry, unique per (context, feature): one slot per token
        pos_N = torch.zeros_like(context_N)
        for key in set(zip(context_N.tolist(), feature_N.tolist(), strict=True)):
            rows = ((context_N == key[0]) & (feature_N == key[1])).nonzero().squeeze(1)
            pos_N[rows] = torch.randperm(width, generator=gen)[: len(rows)]
        positioned.append((context_N, feature_N, value_N))
        positions.append(pos_N)
    return positioned, positions


@pytest.mark.parametrize("device", DEVICES)
def test_kept_windows_equal_brute_force(device: str) -> None:
    width = 6
    batches, positions = make_positioned_batches(seed=8, width=width)
    top = StreamingTopK(N_FEATURES, 4, device=device, width=width)
    sample = StreamingSample(N_FEATURES, 4, seed=5, device=device, width=width)
    windows: dict[tuple[int, int], Tensor] = defaultdict(lambda: torch.zeros(width))
    for (context_N, feature_N, value_N), pos_N in zip(batches, positions, strict=True):
        for acc in (top, sample):
            acc.update(
                context_N.to(device), feature_N.to(device), value_N.to(device), pos_N.to(device)
            )
        for c, f, v, p in zip(
            *(t.tolist() for t in (context_N, feature_N, value_N, pos_N)), strict=True
        ):
            windows[(f, c)][p] = v
    for acc in (top, sample):
        contexts_FK, acts_FKW = acc.contexts_FK.cpu(), acc.acts_FKW.cpu().float()
        n_checked = 0
        for f in range(N_FEATURES):
            for j, c in enumerate(contexts_FK[f].tolist()):
                expected = windows[(f, c)] if c >= 0 else torch.zeros(width)
                assert torch.equal(acts_FKW[f, j], expected), (f, j, c)
                assert c < 0 or acts_FKW[f, j].max().item() == acc.values_FK[f, j].item()
                n_checked += c >= 0
        assert n_checked > N_FEATURES  # most rows hold several contexts


def test_windows_need_positions_in_range() -> None:
    acc = StreamingTopK(N_FEATURES, 2, width=4)
    one = torch.tensor([1])
    with pytest.raises(ValueError, match="pass pos_N"):
        acc.update(one, one, torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        acc.update(one, one, torch.tensor([1.0]), torch.tensor([4]))
