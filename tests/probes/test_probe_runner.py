"""The shared probe runner: concurrent runs' texts coalesce into few batched forwards and
each run gets exactly what the feature source gives for its own texts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from probes.activations import FeatureActivations
from probes.planted import PlantedFeatures, default_spec_path
from probes.probe_runner import ProbeError, ProbeRunner
from probes.sae_runner import SAEFeatureSource
from sae import SAEConfig, build_sae


class SlowSource:
    """Wraps a real source; each forward takes at least `delay` seconds, like a model on
    a busy machine, and the number of texts per call is recorded."""

    def __init__(self, inner: Any, delay: float = 0.05) -> None:
        self.inner, self.delay = inner, delay
        self.calls: list[int] = []
        self.lock = threading.Lock()

    @property
    def feature_names(self) -> Sequence[str]:
        return list(self.inner.feature_names)

    def activations(self, texts: Sequence[str]) -> list[FeatureActivations]:
        with self.lock:
            self.calls.append(len(texts))
        time.sleep(self.delay)
        return list(self.inner.activations(texts))


@pytest.fixture(scope="module")
def planted(smollm2_tokenizer: Any) -> PlantedFeatures:
    return PlantedFeatures.from_file(default_spec_path(), smollm2_tokenizer)


def texts_for(run: int) -> list[str]:
    return [f"Run {run}: I love my dog, never a cat?", f"Nothing {run} happens (here)."]


@pytest.mark.slow  # the real default model
def test_concurrent_runs_coalesce_and_get_their_own_results(planted: PlantedFeatures) -> None:
    source = SlowSource(planted)
    runner = ProbeRunner(source, max_batch_texts=64)
    love = planted.feature_index("word-love")

    async def main() -> list[Any]:
        results = await asyncio.gather(*(runner.run(texts_for(i), love) for i in range(16)))
        await runner.close()
        return results

    results = asyncio.run(main())
    assert runner.forward_calls == len(source.calls) < 16  # batched, not one per run
    assert sum(source.calls) == runner.texts_run == 32
    for i, (first, second) in enumerate(results):
        expected = planted.activations(texts_for(i))
        assert first.acts == tuple(expected[0].dense([love])[:, 0].tolist())
        assert first.tokens[first.peak or 0] == " love" and first.max_act > 0
        assert second.max_act == 0 and second.peak is None


def test_batches_respect_the_text_limit(planted: PlantedFeatures) -> None:
    source = SlowSource(planted)
    runner = ProbeRunner(source, max_batch_texts=4)

    async def main() -> None:
        await asyncio.gather(*(runner.run(texts_for(i), 0) for i in range(10)))
        await runner.close()

    asyncio.run(main())
    assert max(source.calls) <= 4 and sum(source.calls) == 20


def test_model_and_sae_source(tiny_llama: Any) -> None:
    sae = build_sae(SAEConfig(architecture="topk", d_in=32, d_sae=64, k=4))
    sae.init_weights(1)
    source = SAEFeatureSource(tiny_llama, sae, "layers.1", context_length=64)
    runner = ProbeRunner(source)
    texts = ["red green blue", "The quick brown fox jumps over the lazy dog."]

    async def main() -> list[Any]:
        results = await asyncio.gather(*(runner.run([t], 5) for t in texts))
        await runner.close()
        return [r[0] for r in results]

    got = asyncio.run(main())
    for result, expected in zip(got, source.dense(texts, [5]), strict=True):
        assert result.acts == pytest.approx(expected[:, 0].tolist(), abs=1e-5)


def test_bad_requests_and_failing_forwards(planted: PlantedFeatures) -> None:
    runner = ProbeRunner(planted)

    async def ask(texts: list[str], feature: int) -> Any:
        return await runner.run(texts, feature)

    with pytest.raises(ProbeError, match="empty"):
        asyncio.run(ask(["  "], 0))
    with pytest.raises(ProbeError, match="limit"):
        asyncio.run(ask(["x" * 5000], 0))
    with pytest.raises(ProbeError, match=r"valid indices are 0\.\.24"):
        asyncio.run(ask(["fine"], 99))

    class Broken(SlowSource):
        def activations(self, texts: Sequence[str]) -> list[FeatureActivations]:
            raise RuntimeError("CUDA out of memory")

    broken = ProbeRunner(Broken(planted))

    async def both() -> list[Any]:
        tasks = [broken.run(["a text"], 0), broken.run(["another"], 0)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await broken.close()
        return results

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(both()))
