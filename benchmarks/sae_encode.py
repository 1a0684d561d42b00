"""Tokens/s of TopK SAE encode+decode: the sparse path vs the dense reference.

Sparse: `encode_sparse` (top-k straight from the pre-activations, in row chunks) then an
`embedding_bag` decode. Dense reference: the same top-k scattered into dense codes
[tokens, d_sae], then a dense matmul decode. Both see the same inputs under
torch.inference_mode, repetitions interleaved so that machine noise hits them alike;
the ratio (sparse / dense tokens/s) is what to compare across machines.

    .venv/bin/python -m benchmarks.sae_encode [--widths 4096,16384,65536] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from sae.base import SAEConfig
from sae.registry import build_sae


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds `fn` takes, the device's queued work included."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_width(args: argparse.Namespace, d_sae: int, device: torch.device) -> dict[str, float]:
    dtype = getattr(torch, args.dtype)
    cfg = SAEConfig(architecture="topk", d_in=args.d_in, d_sae=d_sae, k=args.k, dtype=args.dtype)
    sae = build_sae(cfg)
    sae.init_weights(seed=0)
    with torch.no_grad():
        sae.b_enc.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(1))
    sae = sae.to(device, dtype).eval()
    gen = torch.Generator().manual_seed(2)
    x_ND = torch.randn(args.tokens, args.d_in, generator=gen).to(device, dtype)

    def sparse() -> torch.Tensor:
        return sae.decode(sae.encode_sparse(x_ND))

    def dense() -> torch.Tensor:
        codes_NF = sae.activate(sae.pre_acts(x_ND))  # top-k scattered into [tokens, d_sae]
        return codes_NF @ sae.W_dec + sae.b_dec

    seconds = {"sparse": 0.0, "dense": 0.0}
    paths = {"sparse": sparse, "dense": dense}
    with torch.inference_mode():
        gap = float((sparse() - dense()).abs().max())  # also the warm-up
        for rep in range(args.reps):
            for name in ("sparse", "dense") if rep % 2 == 0 else ("dense", "sparse"):
                seconds[name] += timed(paths[name], device)
    sparse_tps = args.tokens * args.reps / seconds["sparse"]
    dense_tps = args.tokens * args.reps / seconds["dense"]
    return {
        "d_sae": d_sae,
        "sparse_tok_s": round(sparse_tps, 1),
        "dense_tok_s": round(dense_tps, 1),
        "ratio": round(sparse_tps / dense_tps, 3),
        "max_abs_diff": gap,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="4096,16384,65536", help="d_sae values, commas")
    parser.add_argument("--d-in", type=int, default=576, help="SmolLM2-135M's d_model")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--tokens", type=int, help="default: 1024 on CPU, 16384 on CUDA")
    parser.add_argument("--reps", type=int, help="default: 2 on CPU, 10 on CUDA")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    # Defaults sized so that the CPU run (2 cores here) ends within about a minute.
    on_gpu = device.type == "cuda"
    args.tokens = args.tokens or (16384 if on_gpu else 1024)
    args.reps = args.reps or (10 if on_gpu else 2)

    print(
        f"TopK SAE encode+decode, d_in={args.d_in} k={args.k} tokens={args.tokens} "
        f"reps={args.reps} {args.dtype} on {device} ({torch.get_num_threads()} CPU threads)"
    )
    print(f"{'d_sae':>7} {'sparse tok/s':>13} {'dense tok/s':>12} {'ratio':>6} {'max|diff|':>10}")
    rows = []
    for width in (int(w) for w in args.widths.split(",")):
        row = bench_width(args, width, device)
        rows.append(row)
        print(
            f"{width:>7} {row['sparse_tok_s']:>13,.0f} {row['dense_tok_s']:>12,.0f} "
            f"{row['ratio']:>6.2f} {row['max_abs_diff']:>10.2e}",
            flush=True,
        )
    summary = {
        "benchmark": "sae_encode",
        "device": str(device),
        "dtype": args.dtype,
        "d_in": args.d_in,
        "k": args.k,
        "tokens": args.tokens,
        "ratios": {str(r["d_sae"]): r["ratio"] for r in rows},
        "results": rows,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
