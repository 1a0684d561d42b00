"""The dictionary-wide evidence pass: one read of a corpus, every feature at once.

Texts are read in fixed chunks (in corpus order) and cut into contexts (`sources`). Each
text goes to the *explain* or the *score* split by a seeded hash of its text, so every
context of a text (and every copy of it) lands on the same side. Per batch, on the
device: the top-k explain contexts, a uniform explain sample and a uniform score sample
(both with per-token activations), firing statistics, and a pool of random contexts
per split for non-activating examples. Explainers only ever see the explain side.

Files in the output folder (safetensors, memory-mappable, plus a JSON manifest):
`contexts.safetensors` (token ids of every context), `features.safetensors` (per
feature rows), `pool.safetensors`, `manifest.json`. While running, `checkpoint/` holds
the accumulator state and context shards; a run interrupted at any point resumes from
its last checkpoint and ends with exactly the files of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from probes.corpus import text_splits
from probes.evidence.accumulators import StreamingSample, StreamingTopK
from probes.evidence.config import (
    EXPLAIN,
    SCORE,
    SPLITS,
    EvidenceConfig,
    EvidenceError,
    EvidenceManifest,
    OutputSide,
    corpus_hash,
    evidence_id,
    read_manifest,
)
from probes.evidence.files import (
    atomic_save,
    concat_contexts,
    concat_shards,
    empty_contexts,
    selection_tensors,
)
from probes.evidence.pool import ContextPool
from probes.evidence.sources import ChunkReader, ContextChunk, EntryBatch, merge_batches, n_chunks
from probes.evidence.stats import FeatureStats
from probes.evidence.token_firing import TokenFiring

log = logging.getLogger(__name__)

_ChunkRead = tuple[Sequence[str], int, ContextChunk, Iterator[EntryBatch]]


class _Accumulators:
    def __init__(self, n_features: int, config: EvidenceConfig, device: torch.device) -> None:
        width, seed = config.context_width, config.seed
        self.top = StreamingTopK(n_features, config.top_k, device, width)
        self.explain = StreamingSample(n_features, config.explain_sample, seed, device, width)
        self.score = StreamingSample(n_features, config.score_sample, seed + 1, device, width)
        self.stats = FeatureStats(
            n_features, config.hist_bins, config.hist_lo, config.hist_hi, device
        )
        self.pool = ContextPool(config.pool_size, seed + 2, device=device)
        self.tokens = TokenFiring(n_features, device)

    def parts(
        self,
    ) -> dict[str, StreamingTopK | StreamingSample | FeatureStats | ContextPool | TokenFiring]:
        return {
            "top": self.top,
            "explain": self.explain,
            "score": self.score,
            "stats": self.stats,
            "pool": self.pool,
            "tokens": self.tokens,
        }

    def update(self, batch: EntryBatch, split_C: Tensor, contexts: ContextChunk) -> None:
        """Fold a batch in; `split_C` gives the split of the chunk's `contexts`."""
        first_id = contexts.first_id
        split_N = split_C[batch.context_N - first_id]
        for split, selections in ((EXPLAIN, (self.top, self.explain)), (SCORE, (self.score,))):
            on_N = split_N == split
            coo = (batch.context_N[on_N], batch.feature_N[on_N], batch.value_N[on_N])
            for selection in selections:
                selection.update(*coo, batch.pos_N[on_N])
        self.stats.update(batch.feature_N, batch.value_N, batch.n_tokens)
        fires_N = batch.value_N > 0
        self.pool.update(
            batch.contexts_C,
            split_C[batch.contexts_C - first_id],
            batch.context_N[fires_N],
            batch.feature_N[fires_N],
        )
        # token ids of the explain split's firings and of all its tokens
        device = batch.feature_N.device
        offsets = contexts.offsets.to(device)
        token_ids = contexts.token_ids.to(device)
        on_N = fires_N & (split_N == EXPLAIN)
        at_N = offsets[batch.context_N[on_N] - first_id] + batch.pos_N[on_N]
        explain_T = torch.repeat_interleave(split_C.to(device) == EXPLAIN, torch.diff(offsets))
        self.tokens.update(batch.feature_N[on_N], token_ids[at_N], token_ids[explain_T])

    def state_dict(self) -> dict[str, Tensor]:
        return {
            f"{name}.{key}": value.cpu()
            for name, part in self.parts().items()
            for key, value in part.state_dict().items()
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for name, part in self.parts().items():
            prefix = f"{name}."
            part.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )


@dataclass
class _Progress:
    texts_per_chunk: int
    next_chunk: int = 0
    n_contexts: int = 0
    n_tokens: int = 0
    n_shards: int = 0
    last_chunk_tokens: int = 0


def build_evidence(
    reader: ChunkReader,
    texts: Sequence[str],
    out_dir: Path,
    source: dict[str, str],
    config: EvidenceConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    output_side: Callable[[EvidenceConfig], OutputSide | None] | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
    checkpoint_seconds: float = 60.0,
    texts_per_chunk: int = 256,
) -> EvidenceManifest:
    """Run (or resume, or reuse) the evidence pass of `reader` over `texts` into `out_dir`.

    `source` names what is read (model, SAE, hookpoint, ...: strings) for the cache key.
    `on_chunk(tokens_read, tokens_this_chunk)` is called after every chunk of
    `texts_per_chunk` texts (the unit of checkpoints and of accumulator updates: larger on
    a GPU; it does not change the result). A finished folder with the same key is
    returned as is; a checkpoint with the same key resumes (in its own chunk size).
    """
    if texts_per_chunk < 1:
        raise EvidenceError(f"texts_per_chunk must be >= 1, got {texts_per_chunk}")
    config = config or EvidenceConfig()
    if not texts:
        raise EvidenceError("the corpus has no texts; give at least one")
    corpus = corpus_hash(texts)
    key = evidence_id(source, corpus, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    finished = read_manifest(out_dir)
    if finished is not None:
        if finished.evidence_id != key:
            raise EvidenceError(
                f"{out_dir} holds evidence {finished.evidence_id}, not {key} (another corpus, "
                "source or config); use another folder or delete it"
            )
        return finished
    started = time.monotonic()
    run = _Run(reader, texts, out_dir, key, config, torch.device(device), texts_per_chunk)
    run.resume()
    run.read(on_chunk, checkpoint_seconds)
    pass_seconds = time.monotonic() - started
    manifest = EvidenceManifest(
        evidence_id=key,
        source=source,
        corpus_hash=corpus,
        config=config,
        n_features=reader.n_features,
        n_texts=len(texts),
        n_contexts=run.progress.n_contexts,
        n_tokens=run.progress.n_tokens,
        n_contexts_per_split=[0, 0],
        has_output_side=False,
        seconds=0.0,
        pass_seconds=round(pass_seconds, 3),
    )
    extra = output_side(config) if output_side is not None else None
    run.finish(manifest, extra, time.monotonic() - started)
    return manifest


class _Run:
    """One (possibly resumed) pass: accumulators, context shards and checkpoints."""

    def __init__(
        self,
        reader: ChunkReader,
        texts: Sequence[str],
        out_dir: Path,
        key: str,
        config: EvidenceConfig,
        device: torch.device,
        texts_per_chunk: int,
    ) -> None:
        self.reader, self.texts, self.out_dir, self.key = reader, texts, out_dir, key
        self.config, self.device = config, device
        self.accumulators = _Accumulators(reader.n_features, config, device)
        self.progress = _Progress(texts_per_chunk)
        self.pending: list[tuple[ContextChunk, Tensor]] = []
        self.checkpoint_dir = out_dir / "checkpoint"

    # -- checkpoints -----------------------------------------------------------------

    def resume(self) -> None:
        state_path = self.checkpoint_dir / "state.safetensors"
        if not state_path.exists():
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
            return
        state = load_file(state_path)
        meta = json.loads(bytes(state.pop("meta").tolist()).decode())
        if meta["evidence_id"] != self.key:
            raise EvidenceError(
                f"{self.checkpoint_dir} belongs to evidence {meta['evidence_id']}, not "
                f"{self.key}; delete it to start over"
            )
        self.accumulators.load_state_dict(state)
        self.progress = _Progress(**meta["progress"])
        for stale in self.checkpoint_dir.glob("contexts-*.safetensors"):
            if int(stale.stem.split("-")[1]) >= self.progress.n_shards:
                stale.unlink()  # written after the last saved state
        log.info("resuming evidence %s at chunk %d", self.key, self.progress.next_chunk)

    def checkpoint(self) -> None:
        self.checkpoint_dir.mkdir(exist_ok=True)
        if self.pending:
            shard = self.checkpoint_dir / f"contexts-{self.progress.n_shards:05d}.safetensors"
            atomic_save(concat_contexts(self.pending), shard)
            self.pending = []
            self.progress.n_shards += 1
        meta = json.dumps({"evidence_id": self.key, "progress": vars(self.progress)})
        state = self.accumulators.state_dict()
        state["meta"] = torch.tensor(list(meta.encode()), dtype=torch.uint8)
        atomic_save(state, self.checkpoint_dir / "state.safetensors")

    # -- the pass --------------------------------------------------------------------

    def _start_chunk(self, chunk: int, first_context: int) -> _ChunkRead:
        chunk_texts = self.progress.texts_per_chunk
        first_text = chunk * chunk_texts
        texts = self.texts[first_text : first_text + chunk_texts]
        contexts, batches = self.reader.read(
            texts, first_text, first_context, self.config.context_width
        )
        return texts, first_text, contexts, batches

    def read(self, on_chunk: Callable[[int, int], None] | None, every: float) -> None:
        config = self.config
        last_save = time.monotonic()
        last = n_chunks(len(self.texts), self.progress.texts_per_chunk)
        # The next chunk is tokenized (and cut into contexts) in a thread while this one
        # runs through the model: on a GPU, tokenizing is otherwise the bottleneck.
        with ThreadPoolExecutor(max_workers=1) as prefetch:
            ahead: Future[_ChunkRead] | None = None
            for chunk in range(self.progress.next_chunk, last):
                if config.max_tokens is not None and self.progress.n_tokens >= config.max_tokens:
                    break
                if ahead is None:
                    ahead = prefetch.submit(self._start_chunk, chunk, self.progress.n_contexts)
                texts, first_text, contexts, batches = ahead.result()
                ahead = None
                will_read = self.progress.n_tokens + int(contexts.offsets[-1])
                if chunk + 1 < last and (
                    config.max_tokens is None or will_read < config.max_tokens
                ):
                    first_next = self.progress.n_contexts + contexts.n_contexts
                    ahead = prefetch.submit(self._start_chunk, chunk + 1, first_next)
                self._fold(texts, first_text, contexts, batches)
                self.progress.next_chunk = chunk + 1
                if time.monotonic() - last_save >= every:
                    self.checkpoint()
                    last_save = time.monotonic()
                if on_chunk is not None:
                    on_chunk(self.progress.n_tokens, self.progress.last_chunk_tokens)

    def _fold(
        self,
        texts: Sequence[str],
        first_text: int,
        contexts: ContextChunk,
        batches: Iterator[EntryBatch],
    ) -> None:
        """Run one chunk through the accumulators and queue its contexts for the files."""
        config = self.config
        split_T = text_splits(texts, config.score_fraction, config.seed)
        split_C = split_T[contexts.text - first_text]
        # One update per chunk: the per-update cost of the selections is mostly per
        # feature, so fewer, larger updates are cheaper.
        batch = merge_batches(list(batches))
        self.accumulators.update(batch, split_C.to(self.device), contexts)
        self.pending.append((contexts, split_C))
        self.progress.n_contexts += contexts.n_contexts
        self.progress.n_tokens += batch.n_tokens
        self.progress.last_chunk_tokens = batch.n_tokens

    # -- the files -------------------------------------------------------------------

    def finish(self, manifest: EvidenceManifest, extra: OutputSide | None, seconds: float) -> None:
        shards = [
            load_file(self.checkpoint_dir / f"contexts-{i:05d}.safetensors")
            for i in range(self.progress.n_shards)
        ]
        if self.pending:
            shards.append(concat_contexts(self.pending))
        contexts = concat_shards(shards) if shards else empty_contexts()
        split_C = contexts["split"]
        manifest.n_contexts_per_split = [int((split_C == s).sum()) for s in range(len(SPLITS))]
        manifest.has_output_side = extra is not None
        manifest.seconds = round(seconds, 3)
        acc = self.accumulators
        features = {
            **{f"top.{k}": v for k, v in selection_tensors(acc.top).items()},
            **{f"explain.{k}": v for k, v in selection_tensors(acc.explain).items()},
            **{f"score.{k}": v for k, v in selection_tensors(acc.score).items()},
            "stats.count": acc.stats.count_F.cpu(),
            "stats.sum": acc.stats.sum_F.cpu(),
            "stats.max": acc.stats.max_F.cpu(),
            "stats.hist": acc.stats.hist_FB.cpu(),
            "stats.hist_edges": acc.stats.bin_edges.cpu(),
            "stats.tokens": acc.stats.tokens_seen.reshape(1).cpu(),
            **{f"tokens.{k}": v for k, v in acc.tokens.finish(self.config.token_table).items()},
        }
        if extra is not None:
            lens = extra.lens.cpu()
            features |= {
                "lens.promoted_ids": lens.promoted_ids_FN,
                "lens.promoted_values": lens.promoted_values_FN,
                "lens.suppressed_ids": lens.suppressed_ids_FN,
                "lens.suppressed_values": lens.suppressed_values_FN,
                "similar.ids": extra.similar_ids_FN.cpu(),
                "similar.cos": extra.similar_cos_FN.cpu(),
            }
        pool_feature, pool_context = acc.pool.entries()
        pool_files = {
            "members": acc.pool.sample.ordered()[1].cpu(),
            "context": pool_context.cpu(),
            "feature": pool_feature.cpu(),
        }
        atomic_save(contexts, self.out_dir / "contexts.safetensors")
        atomic_save(
            {k: v.contiguous() for k, v in features.items()}, self.out_dir / "features.safetensors"
        )
        atomic_save(pool_files, self.out_dir / "pool.safetensors")
        tmp = self.out_dir / "manifest.json.tmp"
        tmp.write_text(manifest.model_dump_json(indent=2))
        os.replace(tmp, self.out_dir / "manifest.json")  # last: its presence means complete
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
