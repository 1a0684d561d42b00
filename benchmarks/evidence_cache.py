"""The evidence pass from the activation cache against the same pass from the model.

Over the first `--tokens` tokens of the default corpus, with the same model, SAE and
batching, in one run (ratios, not absolute times, are the result):
- forward: the model alone (stopped after the hookpoint) over rows cut from the token
  cache: what any pass that runs the model pays at least;
- model: the evidence pass as it ran before the caches (each chunk tokenized again);
- model_tokens: the evidence pass from the model, rows cut from the token cache;
- cache_build: reading the activations once into an activation cache;
- cached: the evidence pass from that cache (the model is not run).
It checks that `model`, `model_tokens` and `cached` wrote byte-identical files.
Goals: model / cached >= 5 on a CPU; on a GPU, model_tokens >= 70% of forward's tokens/s.
`--passes` times only some (the cache is then built untimed for `cached`): over the whole
corpus, `--tokens 2000000 --passes model_tokens,cached` takes ~13 minutes on 2 cores.

    .venv/bin/python -m benchmarks.evidence_cache [--tokens 100000] [--random-sae 65536]
        [--device cuda --dtype bfloat16] [--passes model_tokens,cached]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.evidence import random_topk_sae, texts_for
from probes.activation_cache import build_activation_cache, plan_cache, reader_source
from probes.evidence.build import build_evidence
from probes.evidence.config import EvidenceConfig
from probes.evidence.sources import CachedChunkReader, ChunkReader, SAEChunkReader
from probes.token_cache import token_cache
from runtime import loaders
from runtime.caches import pass_reader, texts_per_chunk, texts_per_read
from runtime.evidence import corpus_texts
from runtime.settings import get_settings

PASSES = ("forward", "model", "model_tokens", "cache_build", "cached")
EVIDENCE_PASSES = ("model", "model_tokens", "cached")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--random-sae", type=int, default=0, help="random TopK SAE of this width")
    parser.add_argument("--passes", default=",".join(PASSES), help="which to time, comma-separated")
    args = parser.parse_args()
    wanted = args.passes.split(",")
    if unknown := sorted(set(wanted) - set(PASSES)):
        parser.error(f"unknown passes {unknown}; choose from {', '.join(PASSES)}")

    overrides = {k: v for k, v in {"device": args.device, "dtype": args.dtype}.items() if v}
    settings = get_settings(**overrides)
    subject = loaders.open_subject_model(settings)
    if args.random_sae:
        sae = random_topk_sae(subject.d_model, args.random_sae, 32, subject.device, subject.dtype)
        hookpoint = settings.hookpoint
    else:
        sae = loaders.open_sae(settings, subject)  # in its own dtype, as evidence builds run it
        hookpoint = loaders.sae_hookpoint(settings, sae)
    reader = pass_reader(settings, subject, hookpoint)
    per_chunk = texts_per_chunk(str(subject.device))  # texts per accumulator update
    per_read = texts_per_read(str(subject.device))  # texts the model reads together
    texts = texts_for(subject.tokenizer, corpus_texts(settings, None), args.tokens)
    on_gpu = subject.device.type == "cuda"
    config = EvidenceConfig()
    work = Path(tempfile.mkdtemp(prefix="glossator-bench-cache-"))

    def timed(fn: Callable[[], object]) -> float:
        if on_gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if on_gpu:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    started = time.perf_counter()
    tokens = token_cache(work / "tokens", texts, subject.tokenizer)
    token_cache_s = time.perf_counter() - started

    def forward() -> None:
        for first in range(0, len(texts), per_read):
            rows = np.arange(first, min(first + per_read, len(texts)))
            with torch.inference_mode():
                reader.read_tokens(reader.cached_batch(tokens, rows), hookpoint)

    def evidence(
        name: str, chunks: ChunkReader, n_texts: int | None = None
    ) -> Callable[[], object]:
        return lambda: build_evidence(
            chunks,
            texts[:n_texts],
            work / name,
            {},
            config,
            device=sae.device,
            texts_per_chunk=per_chunk,
        )

    source = reader_source(reader, "benchmark", settings.dtype)
    plan = plan_cache(work / "acts", reader, tokens, source, texts_per_chunk=per_read)

    def cache_build() -> None:
        build_activation_cache(plan, reader, tokens)

    def from_model(with_tokens: bool) -> SAEChunkReader:
        return SAEChunkReader(reader, sae, tokens if with_tokens else None, texts_per_read=per_read)

    def cached() -> float:
        cache = build_activation_cache(plan, reader, tokens)  # built already if timed
        return timed(evidence("cached", CachedChunkReader(cache, tokens, reader, sae)))

    passes: dict[str, Callable[[], float]] = {
        "forward": lambda: timed(forward),
        "model": lambda: timed(evidence("model", from_model(False))),
        "model_tokens": lambda: timed(evidence("model_tokens", from_model(True))),
        "cache_build": lambda: timed(cache_build),
        "cached": cached,
    }
    timed(evidence("warm-up", from_model(True), per_chunk))  # first-call costs
    seconds = {name: run() for name, run in passes.items() if name in wanted}

    def files(name: str) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (work / name).glob("*.safetensors")}

    written = [files(name) for name in EVIDENCE_PASSES if name in seconds]
    identical = all(f == written[0] for f in written) if len(written) > 1 else None
    n = tokens.n_tokens

    def ratio(label: str, slow: str, fast: str) -> dict[str, float]:
        """{label: seconds[slow] / seconds[fast]} when both ran."""
        if slow in seconds and fast in seconds:
            return {label: round(seconds[slow] / seconds[fast], 3)}
        return {}

    result = {
        "device": str(subject.device),
        "dtype": str(subject.dtype).removeprefix("torch."),
        "d_sae": sae.d_sae,
        "texts": len(texts),
        "tokens": n,
        "token_cache_seconds": round(token_cache_s, 2),
        "tok_s": {k: round(n / v) for k, v in seconds.items()},
        **ratio("model_over_cached", "model", "cached"),
        **ratio("model_tokens_over_cached", "model_tokens", "cached"),
        **ratio("model_tokens_over_forward_throughput", "forward", "model_tokens"),
        **ratio("cache_build_over_model_pass", "cache_build", "model"),
        "cache_bytes": plan.bytes,
        "byte_identical": identical,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
