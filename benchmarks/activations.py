"""Tokens/s reading one hookpoint: the truncated forward vs a naive full forward.

Both paths see the same token batches, interleaved batch by batch so that machine
noise hits them alike; the ratio is what to compare across machines.

    .venv/bin/python -m benchmarks.activations [--hookpoint layers.6] [--batches 4]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial

import torch

from probes.default_corpus import load_default_corpus
from probes.hookpoints import parse_hookpoint, run_to_hookpoints
from probes.tokenization import tokenize_batch
from runtime import loaders
from runtime.settings import get_settings


def naive_read(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, layer: int
) -> torch.Tensor:
    """The usual way: run the whole model, keep every hidden state, pick one."""
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return out.hidden_states[layer + 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hookpoint", default="layers.6")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per row")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    args = parser.parse_args()

    overrides = {k: v for k, v in {"device": args.device, "dtype": args.dtype}.items() if v}
    settings = get_settings(**overrides)
    subject = loaders.open_subject_model(settings)
    hookpoint = parse_hookpoint(subject.model, args.hookpoint)
    if hookpoint.site != "resid":
        parser.error("the naive baseline reads hidden states: use a residual hookpoint, layers.N")
    corpus = load_default_corpus(loaders.default_corpus_dir(settings))
    # Pack held-out then train texts into rows of exactly `tokens` tokens, so no padding
    # skews either path (as activation stores for SAE training do).
    need = args.batches * args.batch_size
    stream = "\n\n".join(corpus.heldout + corpus.train)[: need * args.tokens * 8]
    prefix = len(subject.prefix_ids)
    batch = tokenize_batch(
        subject.tokenizer, [stream], args.tokens + prefix, prefix_ids=subject.prefix_ids
    )
    full_rows = batch.attention_mask_BT.sum(dim=1) == args.tokens + prefix
    if int(full_rows.sum()) < need:
        raise SystemExit(f"corpus too small for {need} rows; lower --batches/--batch-size")
    batch.input_ids_BT = batch.input_ids_BT[full_rows][:need]
    batch.attention_mask_BT = batch.attention_mask_BT[full_rows][:need]
    ids, mask = batch.input_ids_BT.to(subject.device), batch.attention_mask_BT.to(subject.device)

    def timed(fn: Callable[[], object]) -> float:
        if subject.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if subject.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    seconds = {"truncated": 0.0, "naive_full": 0.0}
    size = args.batch_size
    run_to_hookpoints(subject.model, ids[:size], mask[:size], [args.hookpoint])  # warm-up
    for start in range(0, need, size):
        ids_b, mask_b = ids[start : start + size], mask[start : start + size]
        seconds["truncated"] += timed(
            partial(run_to_hookpoints, subject.model, ids_b, mask_b, [args.hookpoint])
        )
        seconds["naive_full"] += timed(
            partial(naive_read, subject.model, ids_b, mask_b, hookpoint.layer)
        )
    n_tokens = int(mask.sum())
    report = {
        "model": subject.name,
        "hookpoint": args.hookpoint,
        "device": str(subject.device),
        "dtype": str(subject.dtype).removeprefix("torch."),
        "tokens": n_tokens,
        "truncated_tok_s": round(n_tokens / seconds["truncated"], 1),
        "naive_full_tok_s": round(n_tokens / seconds["naive_full"], 1),
        "speedup": round(seconds["naive_full"] / seconds["truncated"], 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
