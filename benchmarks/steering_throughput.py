"""Texts/s of steering experiments against plain probe runs over the same texts.

Three ways over the same texts, model, SAE, context length and batch size:
- probe: `SAEFeatureSource.activations` (the model stopped after the hookpoint, then the
  SAE's sparse encode): what a probe run costs;
- steer: `steer_texts` with continuations: each text clean and steered through the
  whole model, the KL and token shifts, then greedy decoding with the KV cache;
- steer_no_continuation: the same without decoding (the forward over the texts only).

Repetitions are interleaved so that machine noise hits the three alike; the first run of
each warms up. The ratios (steer / probe texts/s) are what to compare across machines.

    .venv/bin/python -m benchmarks.steering_throughput [--texts 32] [--continuation-tokens 16]
        [--sae PATH | --random-sae 8192] [--device cuda --dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch

from benchmarks.evidence import random_topk_sae
from benchmarks.sae_encode import timed
from probes.model import SubjectModel
from probes.sae_runner import SAEFeatureSource
from probes.steering import Steering, steer_texts
from runtime import loaders
from runtime.evidence import corpus_texts
from runtime.settings import get_settings
from sae.base import SparseAutoencoder


def open_sae(args: argparse.Namespace, subject: SubjectModel) -> tuple[SparseAutoencoder, str]:
    """(the SAE, its hookpoint): a random TopK one, or the configured / given one."""
    overrides = {"sae": args.sae} if args.sae else {}
    settings = get_settings(device=args.device, dtype=args.dtype, **overrides)
    if args.random_sae:
        sae = random_topk_sae(subject.d_model, args.random_sae, 6, subject.device, subject.dtype)
        return sae, args.hookpoint or settings.hookpoint
    sae = loaders.open_sae(settings, subject).to(dtype=subject.dtype)
    return sae, loaders.sae_hookpoint(settings, sae, args.hookpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=32, help="texts per repetition")
    parser.add_argument("--continuation-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8, help="texts per forward")
    parser.add_argument("--context-length", type=int, default=128, help="tokens kept per text")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--feature", type=int, default=0)
    parser.add_argument("--strength", type=float, default=8.0)
    parser.add_argument("--sae", default=None, help="SAE folder (default: the configured one)")
    parser.add_argument("--random-sae", type=int, default=0, help="random TopK SAE of this width")
    parser.add_argument("--hookpoint", default=None, help="default: the SAE's own")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    settings = get_settings(device=args.device, dtype=args.dtype)
    subject = loaders.open_subject_model(settings)
    sae, hookpoint = open_sae(args, subject)
    texts = corpus_texts(settings, None, subject.tokenizer)[: args.texts]
    source = SAEFeatureSource(
        subject,
        sae,
        hookpoint,
        context_length=args.context_length,
        batch_size=args.batch_size,
        overflow="truncate",
    )
    steering = Steering(feature=args.feature, strength=args.strength)

    def steer(continuation: int) -> Callable[[], object]:
        return lambda: steer_texts(
            subject,
            sae,
            hookpoint,
            texts,
            steering,
            continuation_tokens=continuation,
            batch_size=args.batch_size,
            context_length=args.context_length,
        )

    paths: dict[str, Callable[[], object]] = {
        "probe": lambda: source.activations(texts),
        "steer": steer(args.continuation_tokens),
        "steer_no_continuation": steer(0),
    }
    n_tokens = sum(len(a.tokens) for a in source.activations(texts))  # also warms up
    for fn in paths.values():
        fn()
    seconds = dict.fromkeys(paths, 0.0)
    names = list(paths)
    for rep in range(args.reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            seconds[name] += timed(paths[name], subject.device)
    texts_per_s = {name: len(texts) * args.reps / s for name, s in seconds.items()}
    report = {
        "benchmark": "steering_throughput",
        "model": subject.name,
        "device": str(subject.device),
        "dtype": str(subject.dtype).removeprefix("torch."),
        "sae": f"{sae.cfg.architecture} d_sae={sae.d_sae}",
        "hookpoint": hookpoint,
        "texts": len(texts),
        "text_tokens": n_tokens,
        "continuation_tokens": args.continuation_tokens,
        "batch_size": args.batch_size,
        "texts_per_s": {name: round(v, 2) for name, v in texts_per_s.items()},
        "steer_over_probe": round(texts_per_s["steer"] / texts_per_s["probe"], 3),
        "steer_no_continuation_over_probe": round(
            texts_per_s["steer_no_continuation"] / texts_per_s["probe"], 3
        ),
    }
    print(
        f"{len(texts)} texts ({n_tokens} tokens), {args.continuation_tokens} new tokens, "
        f"{report['sae']} at {hookpoint}, {subject.device} {report['dtype']}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    for name, value in texts_per_s.items():
        print(f"{name:>22} {value:10.2f} texts/s")
    print(f"steer / probe texts/s: {report['steer_over_probe']:.3f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
