"""The evidence pass against the plain read of the same tokens, and against a dense baseline.

Three ways over the same texts, with the same model, SAE and batching:
- read: the model (stopped after the hookpoint) and the SAE's sparse encode; nothing kept;
- evidence: the full pass (`build_evidence`: top-k, two samples with per-token windows,
  statistics, the non-activating pool, files written), output side excluded (it is a
  per-dictionary cost, not per token);
- baseline: the straightforward way: dense `sae.encode`, the per-context max of every
  feature, then a Python heap per feature for its top-k contexts (run on fewer tokens;
  it tokenizes in the main thread). `baseline_over_evidence_pass` leaves out the pass'
  fixed costs (allocating the state, writing the files), which dominate on few tokens.

The first run of each way warms up. Goal: evidence / read <= 1.15.

    .venv/bin/python -m benchmarks.evidence [--tokens 40000] [--device cuda --dtype bfloat16]
        [--random-sae 65536]
"""

from __future__ import annotations

import argparse
import heapq
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from probes.evidence.build import build_evidence
from probes.evidence.config import EvidenceConfig, EvidenceManifest
from probes.evidence.sources import EntryBatch, SAEChunkReader
from probes.reader import ActivationReader
from runtime import loaders
from runtime.caches import default_batching, texts_per_chunk
from runtime.evidence import corpus_texts
from runtime.settings import get_settings
from sae import SAEConfig, SparseAutoencoder, build_sae


def texts_for(tokenizer: object, texts: list[str], tokens: int) -> list[str]:
    """The first texts of `texts` holding about `tokens` tokens."""
    out, seen = [], 0
    for text in texts:
        if seen >= tokens:
            break
        out.append(text)
        seen += len(tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]
    return out


_DENSE_ELEMENTS = 1 << 28


def plain_read(reader: SAEChunkReader, texts: Sequence[str], per_chunk: int, width: int) -> int:
    """Model + sparse encode of every chunk, the next chunk tokenized in a thread as the
    pass does, so that the two differ only by the bookkeeping."""
    tokens = 0

    def start(first: int) -> tuple[object, Iterator[EntryBatch]]:
        return reader.read(texts[first : first + per_chunk], first, 0, width)

    with ThreadPoolExecutor(max_workers=1) as prefetch:
        ahead = prefetch.submit(start, 0)
        for first in range(0, len(texts), per_chunk):
            _, batches = ahead.result()
            if first + per_chunk < len(texts):
                ahead = prefetch.submit(start, first + per_chunk)
            for batch in batches:
                tokens += batch.n_tokens
    return tokens


@torch.inference_mode()
def dense_baseline(
    reader: SAEChunkReader, texts: Sequence[str], per_chunk: int, k: int, width: int
) -> list[list[tuple[float, int]]]:
    """Top-k contexts per feature the straightforward way (dense codes, Python heaps)."""
    sae, activations = reader.sae, reader.reader
    hookpoint = activations.hookpoints[0]
    heaps: list[list[tuple[float, int]]] = [[] for _ in range(sae.d_sae)]
    next_context = 0
    for first in range(0, len(texts), per_chunk):
        batch = activations.tokenize(texts[first : first + per_chunk])
        for rows, acts in activations.batches(batch):
            acts_BTD = acts[hookpoint]
            valid_BT = batch.valid_BT[rows, : acts_BTD.shape[1]].to(acts_BTD.device)
            rank_BT = valid_BT.cumsum(dim=1) - 1
            n_ctx_B = (valid_BT.sum(dim=1) + width - 1) // width
            first_B = torch.cumsum(n_ctx_B, 0) - n_ctx_B
            context_BT = first_B[:, None] + rank_BT // width
            x_ND, context_N = acts_BTD[valid_BT], context_BT[valid_BT]
            best_CF = torch.zeros(int(n_ctx_B.sum()), sae.d_sae, device=x_ND.device)
            step = max(1, _DENSE_ELEMENTS // sae.d_sae)  # bound the dense [N, F] block
            for begin in range(0, x_ND.shape[0], step):
                codes_NF = sae.encode(x_ND[begin : begin + step]).float()
                index_NF = context_N[begin : begin + step, None].expand_as(codes_NF)
                best_CF.scatter_reduce_(0, index_NF, codes_NF, reduce="amax")
            best_FC = best_CF.T.cpu().numpy()
            for f in range(sae.d_sae):
                heap = heaps[f]
                for c in best_FC[f].nonzero()[0].tolist():
                    item = (float(best_FC[f, c]), -(next_context + c))
                    if len(heap) < k:
                        heapq.heappush(heap, item)
                    elif item > heap[0]:
                        heapq.heapreplace(heap, item)
            next_context += best_CF.shape[0]
    return heaps


def random_topk_sae(
    d_in: int, width: int, k: int, device: torch.device, dtype: torch.dtype
) -> SparseAutoencoder:
    sae = build_sae(SAEConfig(architecture="topk", d_in=d_in, d_sae=width, k=k))
    sae.init_weights(0)
    return sae.to(device=device, dtype=dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=40_000)
    parser.add_argument("--baseline-tokens", type=int, default=8_000)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--random-sae", type=int, default=0, help="random TopK SAE of this width")
    parser.add_argument("--texts-per-chunk", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    overrides = {k: v for k, v in {"device": args.device, "dtype": args.dtype}.items() if v}
    settings = get_settings(**overrides)
    subject = loaders.open_subject_model(settings)
    if args.random_sae:
        sae = random_topk_sae(subject.d_model, args.random_sae, 32, subject.device, subject.dtype)
        hookpoint = settings.hookpoint
    else:
        sae = loaders.open_sae(settings, subject).to(dtype=subject.dtype)
        hookpoint = loaders.sae_hookpoint(settings, sae)
    rows, batch_tokens = default_batching(str(subject.device))
    activations = ActivationReader(
        subject,
        [hookpoint],
        settings.context_length,
        batch_size=rows,
        max_batch_tokens=batch_tokens,
    )
    reader = SAEChunkReader(activations, sae)
    on_gpu = subject.device.type == "cuda"
    per_chunk = args.texts_per_chunk or texts_per_chunk(str(subject.device))
    config = EvidenceConfig()
    width = config.context_width
    all_texts = corpus_texts(settings, None)
    texts = texts_for(subject.tokenizer, all_texts, args.tokens)
    small = texts_for(subject.tokenizer, all_texts, args.baseline_tokens)

    def timed(fn: Callable[[], object]) -> float:
        if on_gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if on_gpu:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    last_manifest: list[EvidenceManifest] = []

    def evidence(chosen: list[str]) -> Callable[[], object]:
        def run() -> object:
            with tempfile.TemporaryDirectory() as folder:
                last_manifest[:] = [
                    build_evidence(
                        reader,
                        chosen,
                        Path(folder),
                        {},
                        config,
                        device=sae.device,
                        texts_per_chunk=per_chunk,
                    )
                ]
                return last_manifest[0]

        return run

    plain_read(reader, texts[:per_chunk], per_chunk, width)  # warm-up
    timed(evidence(texts[:per_chunk]))
    seconds: dict[str, list[float]] = {"read": [], "evidence": []}
    counted: list[int] = []
    pass_seconds: list[float] = []
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        seconds["read"].append(
            timed(lambda: counted.append(plain_read(reader, texts, per_chunk, width)))
        )
        seconds["evidence"].append(timed(evidence(texts)))
        pass_seconds.append(last_manifest[0].pass_seconds)
    n_tokens = counted[0]
    small_tokens = plain_read(reader, small, per_chunk, width)
    baseline_seconds = timed(lambda: dense_baseline(reader, small, per_chunk, config.top_k, width))
    small_evidence_seconds = timed(evidence(small))
    small_pass_seconds = last_manifest[0].pass_seconds
    read_s, evidence_s = min(seconds["read"]), min(seconds["evidence"])
    result = {
        "device": str(subject.device),
        "dtype": str(subject.dtype).removeprefix("torch."),
        "d_sae": sae.d_sae,
        "tokens": n_tokens,
        "read_tok_s": round(n_tokens / read_s),
        "evidence_tok_s": round(n_tokens / evidence_s),
        "evidence_over_read": round(evidence_s / read_s, 3),
        "pass_over_read": round(min(pass_seconds) / read_s, 3),
        "files_and_setup_seconds": round(evidence_s - min(pass_seconds), 2),
        "baseline_tokens": small_tokens,
        "baseline_tok_s": round(small_tokens / baseline_seconds),
        "evidence_tok_s_same_tokens": round(small_tokens / small_evidence_seconds),
        "baseline_over_evidence": round(baseline_seconds / small_evidence_seconds, 2),
        "baseline_over_evidence_pass": round(baseline_seconds / small_pass_seconds, 2),
        "seconds": seconds,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
