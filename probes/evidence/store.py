"""Read a finished evidence folder: one feature's evidence at a time, cheaply.

Per-feature rows are read straight from the memory-mapped safetensors files (a feature's
evidence touches a few KB, whatever the size of the dictionary). The explainer's view
(`feature`) and the scorer's view (`scoring_examples`) come from disjoint splits of the
corpus, so nothing an explainer sees is ever used to score it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, computed_field
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from probes.evidence.accumulators import pair_priority
from probes.evidence.config import EXPLAIN, SCORE, EvidenceError, EvidenceManifest, read_manifest

# Seeds of the per-feature random order of non-activating pool contexts: config.seed + this.
_NON_ACTIVATING_SEED = 3
# Tokens of the text kept before each example: where a quote or a line began.
LEFT_CONTEXT = 32


class FeatureNotInEvidenceError(EvidenceError):
    """A feature index outside the evidence's dictionary."""


class Example(BaseModel):
    """One context and this feature's activation on each of its tokens."""

    model_config = ConfigDict(frozen=True)

    context: int
    text_index: int
    start: int  # index of the first token in its text
    token_ids: list[int]
    tokens: list[str]
    acts: list[float]
    max_act: float
    # Up to LEFT_CONTEXT tokens just before the context in its text, to read it by
    # (a quote opened earlier, the start of its line); they carry no activations.
    before: list[str] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def peak(self) -> int:
        """Index of the most active token (the first one on ties)."""
        return max(range(len(self.acts)), key=lambda i: (self.acts[i], -i)) if self.acts else 0


class QuantileBin(BaseModel):
    """Examples whose activation lies in one quantile of the feature's sampled contexts
    (0 is the lowest); lo and hi are the lowest and highest max activation in the bin."""

    index: int
    lo: float
    hi: float
    examples: list[Example]


class TokenValue(BaseModel):
    token: str
    token_id: int
    value: float


class Neighbour(BaseModel):
    feature: int
    cosine: float


class FeatureStatistics(BaseModel):
    fired_tokens: int
    tokens: int
    density: float
    mean_act: float | None  # over the tokens where it fired; None if it never did
    max_act: float
    hist_counts: list[int]
    hist_edges: list[float]


class TokenFiring(BaseModel):
    """A token the feature fired on in the explain split: how often it fired there and
    how often the token occurs in the split (fires / occurrences estimates P(fires | token))."""

    token: str
    token_id: int
    fires: int
    occurrences: int


class FeatureEvidence(BaseModel):
    """What an explainer may see about a feature: explain split only."""

    feature: int
    evidence_id: str
    stats: FeatureStatistics
    top: list[Example]
    quantiles: list[QuantileBin]
    non_activating: list[Example]
    promoted: list[TokenValue] | None
    suppressed: list[TokenValue] | None
    similar: list[Neighbour] | None
    # its most-fired tokens over the whole explain split (None: evidence built without)
    token_firing: list[TokenFiring] | None = None


class ScoringExamples(BaseModel):
    """Held-out examples for scoring: score split only, never shown to explainers."""

    feature: int
    evidence_id: str
    quantiles: list[QuantileBin]
    non_activating: list[Example]


class EvidenceStore:
    """A finished evidence folder. `tokenizer` turns token ids back into strings (the
    subject model's tokenizer)."""

    def __init__(self, folder: str | Path, tokenizer: Any) -> None:
        self.folder = Path(folder)
        manifest = read_manifest(self.folder)
        if manifest is None:
            raise EvidenceError(
                f"no finished evidence in {self.folder}; run `glossator evidence build`"
            )
        self.manifest: EvidenceManifest = manifest
        self.tokenizer = tokenizer
        self._features = safe_open(str(self.folder / "features.safetensors"), framework="pt")
        self._contexts = safe_open(str(self.folder / "contexts.safetensors"), framework="pt")
        # Per-context tables are small; the token ids stay memory-mapped.
        self._offsets, self._text, self._start, self._split = (
            self._contexts.get_tensor(name) for name in ("offsets", "text", "start", "split")
        )
        pool = load_file(self.folder / "pool.safetensors")
        self._pool_members, self._pool_feature = pool["members"], pool["feature"]
        self._pool_context = pool["context"]
        self._strings: dict[int, str] = {}
        self._feature_names = set(self._features.keys())
        self._token_count: Tensor | None = None

    @property
    def n_features(self) -> int:
        return self.manifest.n_features

    # -- the two views ---------------------------------------------------------------

    def feature(
        self,
        feature: int,
        top: int | None = None,
        per_quantile: int | None = None,
        non_activating: int = 20,
    ) -> FeatureEvidence:
        """The explainer's evidence of `feature` (explain split only)."""
        self._check(feature)
        top_rows = self._examples("top", feature)
        return FeatureEvidence(
            feature=feature,
            evidence_id=self.manifest.evidence_id,
            stats=self.stats(feature),
            top=top_rows[:top] if top is not None else top_rows,
            quantiles=self._quantiles("explain", feature, per_quantile),
            non_activating=self._non_activating(feature, EXPLAIN, non_activating),
            promoted=self._lens(feature, "promoted"),
            suppressed=self._lens(feature, "suppressed"),
            similar=self._similar(feature),
            token_firing=self.token_firing(feature),
        )

    def token_firing(self, feature: int) -> list[TokenFiring] | None:
        """The feature's most-fired tokens over the whole explain split, most first."""
        self._check(feature)
        if "tokens.ids" not in self._feature_names:
            return None
        ids, fires = self._row("tokens.ids", feature), self._row("tokens.fires", feature)
        if self._token_count is None:
            self._token_count = self._features.get_tensor("tokens.count")
        count = self._token_count
        out = []
        for token_id, n in zip(ids.tolist(), fires.tolist(), strict=True):
            if token_id < 0:
                break
            out.append(
                TokenFiring(
                    token=self.token_string(token_id),
                    token_id=token_id,
                    fires=n,
                    occurrences=int(count[token_id]) if token_id < count.numel() else 0,
                )
            )
        return out

    def scoring_examples(
        self, feature: int, per_quantile: int | None = None, non_activating: int = 50
    ) -> ScoringExamples:
        """Held-out activating examples across quantiles plus non-activating ones."""
        self._check(feature)
        return ScoringExamples(
            feature=feature,
            evidence_id=self.manifest.evidence_id,
            quantiles=self._quantiles("score", feature, per_quantile),
            non_activating=self._non_activating(feature, SCORE, non_activating),
        )

    def context_split(self, context: int) -> int:
        return int(self._split[context])

    def contexts_in_split(self, split: int) -> Tensor:
        """Ids of every context of `split` (EXPLAIN or SCORE)."""
        return (self._split == split).nonzero().squeeze(1)

    def context_tokens(self, context: int) -> list[str]:
        begin, end = int(self._offsets[context]), int(self._offsets[context + 1])
        return [
            self.token_string(i) for i in self._contexts.get_slice("token_ids")[begin:end].tolist()
        ]

    def context_text(self, context: int) -> str:
        begin, end = int(self._offsets[context]), int(self._offsets[context + 1])
        ids = self._contexts.get_slice("token_ids")[begin:end].tolist()
        return "".join(self.token_string(i) for i in ids)

    def tensor(self, name: str) -> Tensor:
        """A whole stored tensor: `contexts.<name>` from the context file, else from the
        feature file (e.g. `top.values`, `stats.count`)."""
        if name.startswith("contexts."):
            return self._contexts.get_tensor(name.removeprefix("contexts."))
        return self._features.get_tensor(name)

    # -- rows ------------------------------------------------------------------------

    def _check(self, feature: int) -> None:
        if not 0 <= feature < self.n_features:
            raise FeatureNotInEvidenceError(
                f"feature {feature} is not in this evidence: it has {self.n_features} "
                f"features, valid indices 0..{self.n_features - 1}"
            )

    def _row(self, name: str, feature: int) -> Tensor:
        return self._features.get_slice(name)[feature : feature + 1][0]

    def _examples(self, selection: str, feature: int) -> list[Example]:
        contexts = self._row(f"{selection}.contexts", feature).tolist()
        values = self._row(f"{selection}.values", feature).tolist()
        acts = self._windows(selection, feature, len(contexts))
        return [
            self._example(c, acts[j].tolist(), v)
            for j, (c, v) in enumerate(zip(contexts, values, strict=True))
            if c >= 0
        ]

    def _windows(self, selection: str, feature: int, k: int) -> Tensor:
        """The per-token activations [k, width] of the feature's k slots, from the
        sparse (offsets, pos, acts) storage."""
        bounds = self._features.get_slice(f"{selection}.offsets")[
            feature * k : (feature + 1) * k + 1
        ]
        lo, hi = int(bounds[0]), int(bounds[-1])
        pos = self._features.get_slice(f"{selection}.pos")[lo:hi].long()
        values = self._features.get_slice(f"{selection}.acts")[lo:hi].float()
        slot = torch.repeat_interleave(torch.arange(k), bounds[1:] - bounds[:-1])
        out = torch.zeros(k, self.manifest.config.context_width)
        out[slot, pos] = values
        return out

    def _example(self, context: int, acts: list[float], max_act: float) -> Example:
        begin, end = int(self._offsets[context]), int(self._offsets[context + 1])
        # A text's contexts are consecutive, so the tokens before this one are stored
        # right before it.
        left = min(LEFT_CONTEXT, int(self._start[context]), begin)
        ids = self._contexts.get_slice("token_ids")[begin - left : end].tolist()
        return Example(
            context=context,
            text_index=int(self._text[context]),
            start=int(self._start[context]),
            token_ids=ids[left:],
            tokens=[self.token_string(i) for i in ids[left:]],
            acts=acts[: len(ids) - left] if acts else [0.0] * (len(ids) - left),
            max_act=max_act,
            before=[self.token_string(i) for i in ids[:left]],
        )

    def _quantiles(
        self, selection: str, feature: int, per_quantile: int | None
    ) -> list[QuantileBin]:
        """The sampled contexts sorted by activation and cut into n_quantiles bins of
        (near) equal count; each bin keeps sample (random) order."""
        examples = self._examples(selection, feature)
        n, n_bins = len(examples), self.manifest.config.n_quantiles
        ranked = sorted(range(n), key=lambda i: examples[i].max_act)
        bins = []
        for b in range(n_bins):
            members = sorted(ranked[b * n // n_bins : (b + 1) * n // n_bins])
            if not members:
                continue
            chosen = [examples[i] for i in members]
            values = [e.max_act for e in chosen]
            if per_quantile is not None:
                chosen = chosen[:per_quantile]
            bins.append(QuantileBin(index=b, lo=min(values), hi=max(values), examples=chosen))
        return bins

    def _non_activating(self, feature: int, split: int, n: int) -> list[Example]:
        """Pool contexts of `split` where the feature never fires, in a seeded per-feature
        random order."""
        return [self._example(int(c), [], 0.0) for c in self.quiet_contexts(feature, split)[:n]]

    def quiet_contexts(self, feature: int, split: int) -> Tensor:
        """Ids of the pool contexts of `split` where the feature never fires, in a seeded
        per-feature random order (true negatives: every firing in the pool is recorded)."""
        members = self._pool_members[split]
        members = members[members >= 0]
        quiet = members[~torch.isin(members, self.pool_firing([feature]))]
        seed = self.manifest.config.seed + _NON_ACTIVATING_SEED
        priority = pair_priority(seed, torch.full_like(quiet, feature), quiet)
        return quiet[torch.argsort(priority)]

    def pool_firing(self, features: list[int]) -> Tensor:
        """Ids of the pool contexts (either split) where any of `features` fires."""
        found = []
        for feature in features:
            lo = int(torch.searchsorted(self._pool_feature, feature))
            hi = int(torch.searchsorted(self._pool_feature, feature, right=True))
            found.append(self._pool_context[lo:hi])
        return torch.cat(found) if found else torch.zeros(0, dtype=torch.int64)

    def context_token_ids(self, context: int) -> Tensor:
        begin, end = int(self._offsets[context]), int(self._offsets[context + 1])
        return self._contexts.get_slice("token_ids")[begin:end]

    def quiet_example(self, context: int) -> Example:
        """A context as an example of a feature that does not fire anywhere in it."""
        return self._example(context, [], 0.0)

    def firing_features(self) -> list[int]:
        """The features that fired at least once in the evidence, ascending."""
        return (self.tensor("stats.count") > 0).nonzero().squeeze(1).tolist()

    def stats(self, feature: int) -> FeatureStatistics:
        """The feature's firing statistics alone (no examples read)."""
        self._check(feature)
        count = int(self._row("stats.count", feature))
        tokens = int(self._features.get_tensor("stats.tokens")[0])
        total = float(self._row("stats.sum", feature))
        return FeatureStatistics(
            fired_tokens=count,
            tokens=tokens,
            density=count / tokens if tokens else 0.0,
            mean_act=total / count if count else None,
            max_act=float(self._row("stats.max", feature)),
            hist_counts=self._row("stats.hist", feature).tolist(),
            hist_edges=self._features.get_tensor("stats.hist_edges").tolist(),
        )

    def _lens(self, feature: int, side: str) -> list[TokenValue] | None:
        if not self.manifest.has_output_side:
            return None
        ids = self._row(f"lens.{side}_ids", feature).tolist()
        values = self._row(f"lens.{side}_values", feature).tolist()
        return [
            TokenValue(token=self.token_string(i), token_id=i, value=v)
            for i, v in zip(ids, values, strict=True)
        ]

    def _similar(self, feature: int) -> list[Neighbour] | None:
        if not self.manifest.has_output_side:
            return None
        ids = self._row("similar.ids", feature).tolist()
        cos = self._row("similar.cos", feature).tolist()
        return [Neighbour(feature=i, cosine=c) for i, c in zip(ids, cos, strict=True)]

    def token_string(self, token_id: int) -> str:
        """The token decoded on its own (cached); partial UTF-8 bytes show as U+FFFD."""
        text = self._strings.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
            self._strings[token_id] = text
        return text
