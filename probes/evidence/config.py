"""What an evidence build is: its settings (part of its cache key), its manifest, the
two corpus splits, and the cache key itself."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from errors import UserError
from probes.corpus import EXPLAIN_SPLIT, SCORE_SPLIT
from probes.corpus import corpus_hash as corpus_hash  # re-exported: part of the evidence key
from probes.evidence.output_side import LogitLens

MANIFEST_VERSION = 1
EXPLAIN, SCORE = EXPLAIN_SPLIT, SCORE_SPLIT
SPLITS = ("explain", "score")
# Source fields that name a model, SAE or tokenizer folder: one inside the data dir is
# recorded relative to it, so that a data dir moved or mounted elsewhere keeps its
# evidence (its key and its lookup). A planted spec's path stays as given: its content
# hash (`spec_hash`) finds it again.
PATH_FIELDS = ("model_path", "sae_path", "tokenizer")


class EvidenceError(UserError):
    """The evidence pass cannot run or its files cannot be used; the message says why."""


class EvidenceConfig(BaseModel):
    """Everything that changes the evidence; part of its cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Bills et al. (2023) showed explainers 64-token excerpts.
    context_width: int = Field(default=64, ge=1, le=4096)
    top_k: int = Field(default=50, ge=1)
    # 10 quantiles x 5 (explain) and x 10 (score), as in delphi / Bills et al.
    n_quantiles: int = Field(default=10, ge=1)
    explain_sample: int = Field(default=50, ge=1)
    score_sample: int = Field(default=100, ge=1)
    # 1.0: every text is held out (a corpus read only to score explanations on).
    score_fraction: float = Field(default=0.2, gt=0.0, le=1.0)
    pool_size: int = Field(default=500, ge=1)  # per split
    hist_bins: int = Field(default=64, ge=1)
    hist_lo: float = Field(default=1e-3, gt=0.0)
    hist_hi: float = Field(default=1e4, gt=0.0)
    logit_lens_n: int = Field(default=20, ge=1)
    similar_n: int = Field(default=10, ge=1)
    # per feature, its most-fired tokens over the whole explain split, with their counts
    token_table: int = Field(default=64, ge=1)
    seed: int = 0
    max_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _bins_ordered(self) -> EvidenceConfig:
        if self.hist_lo >= self.hist_hi:
            raise ValueError(f"hist_lo={self.hist_lo} must be below hist_hi={self.hist_hi}")
        return self


class EvidenceManifest(BaseModel):
    """What a finished evidence folder holds (`manifest.json`)."""

    version: int = MANIFEST_VERSION
    evidence_id: str
    source: dict[str, str]
    corpus_hash: str
    config: EvidenceConfig
    n_features: int
    n_texts: int
    n_contexts: int
    n_tokens: int
    n_contexts_per_split: list[int]
    has_output_side: bool
    seconds: float  # the whole build: pass, output side and files
    pass_seconds: float  # the pass over the corpus alone (this run's part if resumed)


@dataclass
class OutputSide:
    """Decoder-side evidence: logit lens and decoder-cosine neighbours (model + SAE only)."""

    lens: LogitLens
    similar_ids_FN: Tensor
    similar_cos_FN: Tensor


def evidence_id(source: dict[str, str], corpus: str, config: EvidenceConfig) -> str:
    """The cache key: same source, corpus and config give the same id."""
    blob = json.dumps(
        {"source": source, "corpus": corpus, "config": config.model_dump(), "v": MANIFEST_VERSION},
        sort_keys=True,
    )
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def recorded_path(path: Path, data_dir: Path) -> str:
    """How a source records `path`: relative to `data_dir` when inside it, else as given."""
    try:
        inside = path.expanduser().resolve().relative_to(data_dir.expanduser().resolve())
    except ValueError:
        return str(path)
    return inside.as_posix()


def recorded_file(value: str, data_dir: Path) -> Path:
    """The file a source's recorded path names: a relative one is inside `data_dir`; an
    absolute one is used as it is (manifests from before relative paths hold those)."""
    path = Path(value)
    return path if path.is_absolute() else data_dir / path


def read_manifest(out_dir: Path) -> EvidenceManifest | None:
    path = out_dir / "manifest.json"
    if not path.exists():
        return None
    try:
        manifest = EvidenceManifest.model_validate_json(path.read_text())
    except ValueError as error:
        raise EvidenceError(f"{path} is not an evidence manifest ({error}); delete it") from error
    if manifest.version != MANIFEST_VERSION:
        raise EvidenceError(f"{path} has version {manifest.version}; rebuild the evidence")
    return manifest
