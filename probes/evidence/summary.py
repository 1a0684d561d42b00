"""A small per-feature summary of finished evidence, published to Redis, so a service
can list, sort and filter a whole dictionary without opening the evidence files.

Keys (all values are versioned pydantic JSON):
- `glossator:evidence:{id}:manifest`: the build's manifest;
- `glossator:evidence:{id}:summary`: a hash, field = feature index, value = summary;
- `glossator:evidence:latest`: a hash, field = source slug, value = evidence id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
from pydantic import BaseModel

from identifiers import redis_keys
from probes.evidence.store import EvidenceStore

SUMMARY_VERSION = 1
LATEST_KEY = redis_keys.EVIDENCE_LATEST
_TOP_TOKENS = 5
_EXAMPLE_CHARS = 200
_PIPELINE_FEATURES = 1000


class FeatureSummary(BaseModel):
    version: int = SUMMARY_VERSION
    evidence_id: str
    feature: int
    fired_tokens: int
    density: float
    mean_act: float | None
    max_act: float
    peak_tokens: list[str]  # the commonest most-active tokens of its top contexts
    top_example: str  # the text of its best context, cut to 200 characters
    promoted: list[str] | None  # logit lens, top promoted tokens


def manifest_key(evidence_id: str) -> str:
    return redis_keys.evidence_manifest(evidence_id)


def summary_key(evidence_id: str) -> str:
    return redis_keys.evidence_summary(evidence_id)


def summaries(store: EvidenceStore) -> Iterator[FeatureSummary]:
    """Every feature's summary, computed from whole tensors (not feature by feature)."""
    contexts_FK = store.tensor("top.contexts")
    peak_FK = store.tensor("top.peak").long()
    offsets_C, token_ids = store.tensor("contexts.offsets"), store.tensor("contexts.token_ids")
    has_FK = contexts_FK >= 0
    peak_ids_FK = torch.full_like(contexts_FK, -1)
    peak_ids_FK[has_FK] = token_ids[offsets_C[contexts_FK[has_FK]] + peak_FK[has_FK]].long()
    count_F, sum_F = store.tensor("stats.count"), store.tensor("stats.sum")
    max_F, tokens = store.tensor("stats.max"), int(store.tensor("stats.tokens")[0])
    promoted_FN = (
        store.tensor("lens.promoted_ids")[:, :_TOP_TOKENS]
        if store.manifest.has_output_side
        else None
    )
    for f in range(store.n_features):
        count = int(count_F[f])
        peaks = Counter(i for i in peak_ids_FK[f].tolist() if i >= 0)
        best = int(contexts_FK[f, 0]) if bool(has_FK[f, 0]) else -1
        yield FeatureSummary(
            evidence_id=store.manifest.evidence_id,
            feature=f,
            fired_tokens=count,
            density=count / tokens if tokens else 0.0,
            mean_act=float(sum_F[f]) / count if count else None,
            max_act=float(max_F[f]),
            peak_tokens=[store.token_string(i) for i, _ in peaks.most_common(_TOP_TOKENS)],
            top_example=store.context_text(best)[:_EXAMPLE_CHARS] if best >= 0 else "",
            promoted=(
                None
                if promoted_FN is None
                else [store.token_string(i) for i in promoted_FN[f].tolist()]
            ),
        )


def publish(client: Any, store: EvidenceStore, slug: str) -> int:
    """Write the manifest and every feature's summary, then point `slug` at this build
    (last, so readers never see a half-published build as the latest). Returns the
    number of summaries written."""
    evidence_id = store.manifest.evidence_id
    client.set(manifest_key(evidence_id), store.manifest.model_dump_json())
    written = 0
    batch: dict[str, str] = {}
    for summary in summaries(store):
        batch[str(summary.feature)] = summary.model_dump_json()
        if len(batch) >= _PIPELINE_FEATURES:
            client.hset(summary_key(evidence_id), mapping=batch)
            written += len(batch)
            batch = {}
    if batch:
        client.hset(summary_key(evidence_id), mapping=batch)
        written += len(batch)
    client.hset(LATEST_KEY, slug, evidence_id)
    return written
