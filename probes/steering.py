"""Steering: the output side of a feature, measured by adding it into the model.

A probe run asks when a feature fires; a steering experiment asks what it does. Each text
runs twice in the same batch, clean and steered, where steered means the feature's
decoder direction d_f is added where the dictionary writes (`sae.cfg.output_hookpoint`
for a transcoder, else the hookpoint it reads) at every position of the text (never the
project's prefix tokens or padding) and at every generated token:

    additive  x + strength * d_f
    clamped   x + (clamp - a_f(x)) * d_f    a_f(x): the feature's activation, encoded
                                            from what the dictionary reads there

The result compares the two next-token distributions (KL, the tokens whose
log-probability moved most after the text) and the greedy continuations.

How d_f is taken from the dictionary's decoding: `probes.steering_shift`.

Batching: texts are grouped by length, `batch_size` texts (2 * batch_size rows) per
forward, right-padded as the probes pad them. Greedy decoding appends every row's next
token to one shared KV cache: each new token gets its own row's next position
(position_ids = the row's length so far) and the attention mask hides the padding left
between a short row's text and its continuation, so a text's result does not depend on
what it is batched with (up to float rounding: KL values below ~1e-6 nats are noise).
The forward over the texts keeps logits [2 * batch_size, tokens, vocab] in memory.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from probes.hookpoints import hookpoint_width, parse_hookpoint
from probes.model import SubjectModel
from probes.steering_shift import (
    Shift,
    Steering,
    SteeringError,
    check_feature,
    feature_shift,
    steered,
)
from probes.tokenization import TokenBatch, tokenize_batch
from sae.architectures.transcoder import TRANSCODERS
from sae.base import SparseAutoencoder

__all__ = [
    "Steering",
    "SteeringError",
    "SteeringResult",
    "TokenShift",
    "VocabularyShift",
    "steer_texts",
    "token_text",
]


@dataclass(frozen=True)
class TokenShift:
    token: str  # decoded token text
    token_id: int
    delta_logprob: float  # steered minus clean log-probability
    steered_prob: float

    @property
    def clean_prob(self) -> float:
        return (
            math.exp(math.log(self.steered_prob) - self.delta_logprob) if self.steered_prob else 0.0
        )


@dataclass(frozen=True)
class SteeringResult:
    text: str
    kl_last: float  # KL(steered || clean) of the next-token distribution after the text, nats
    kl_mean: float  # the same, averaged over the text's (non-prefix) positions
    # Largest delta_logprob first, among tokens steering makes at least PLAUSIBLE_PROB likely
    promoted: list[TokenShift]
    demoted: list[TokenShift]  # most negative first, among tokens that were that likely
    clean_continuation: str  # greedy, decoded
    steered_continuation: str
    # The whole vocabulary's shift after the text, with `keep_vocabulary` (else None):
    # what `probes.promotions` aggregates over texts.
    vocabulary: VocabularyShift | None = None


@dataclass(frozen=True)
class VocabularyShift:
    """Every token's change of next-token log-probability after one text (on the CPU)."""

    delta_V: torch.Tensor  # float32, steered minus clean log-probability
    plausible_V: torch.Tensor  # bool: at least PLAUSIBLE_PROB likely, clean or steered


# -- running texts -------------------------------------------------------------------------


@torch.inference_mode()
def steer_texts(
    subject: SubjectModel,
    sae: SparseAutoencoder,
    hookpoint: str,
    texts: Sequence[str],
    steering: Steering,
    *,
    continuation_tokens: int = 16,
    top_tokens: int = 10,
    batch_size: int = 8,
    context_length: int = 1024,
    keep_vocabulary: bool = False,
) -> list[SteeringResult]:
    """Each text clean and steered: KL, most promoted/demoted next tokens, continuations.

    `hookpoint` is where the dictionary reads; it writes at `sae.cfg.output_hookpoint`
    when set (a transcoder), else there. `batch_size` texts run per forward (each as a
    clean and a steered row); texts longer than `context_length` tokens (the prefix
    included) are truncated, with a warning. A continuation ends early at an
    end-of-text token. `keep_vocabulary` keeps each text's whole-vocabulary shift.
    """
    written = _check_request(subject, sae, hookpoint, texts, steering)
    _check_counts(continuation_tokens, top_tokens, batch_size)
    batch = tokenize_batch(
        subject.tokenizer,
        texts,
        context_length,
        "truncate",
        prefix_ids=subject.prefix_ids,
        with_spans=False,
    )
    lengths = batch.valid_BT.sum(dim=1).tolist()
    empty = [i for i, n in enumerate(lengths) if n == 0]
    if empty:
        raise SteeringError(f"texts {empty[:5]} hold no tokens; give texts with some")
    run = _Run(
        subject,
        hookpoint,
        written,
        feature_shift(sae, steering),
        continuation_tokens,
        top_tokens,
        _eos_ids(subject),
        keep_vocabulary,
    )
    results: dict[int, SteeringResult] = {}
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])  # little padding per group
    vocab = _vocab_size(subject)
    for rows in _groups(order, lengths, batch_size, vocab):  # one row per text: truncated
        found = run.group(batch, rows, [texts[i] for i in rows])
        results.update(zip(rows, found, strict=True))
    return [results[i] for i in range(len(texts))]


# Logit elements one forward may hold ([2 * texts, tokens, vocab]): 2**27 = 512 MiB in
# float32. Eight 1,000-token texts with SmolLM2's 49,152 tokens would take 3.2 GB.
LOGITS_BUDGET = 1 << 27


def _groups(order: list[int], lengths: list[int], batch_size: int, vocab: int) -> list[list[int]]:
    """Texts (longest first) in groups of at most `batch_size` whose logits fit the
    budget; a text too long for it alone runs alone."""
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        width = lengths[group[0]] if group else lengths[i]  # the group's longest, first
        if (
            group is None
            or len(group) == batch_size
            or 2 * (len(group) + 1) * width * vocab > LOGITS_BUDGET
        ):
            groups.append([i])
        else:
            group.append(i)
    return groups


def _vocab_size(subject: SubjectModel) -> int:
    """The LM head's width (it may pad past the tokenizer's vocabulary)."""
    head = subject.model.get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else len(subject.tokenizer)


@dataclass(frozen=True)
class _Run:
    """One steering experiment's fixed parts, run one group of texts at a time."""

    subject: SubjectModel
    hookpoint: str
    written: str
    shift: Shift
    continuation_tokens: int
    top_tokens: int
    eos_ids: frozenset[int]
    keep_vocabulary: bool

    def group(self, batch: TokenBatch, rows: list[int], texts: list[str]) -> list[SteeringResult]:
        """Results of the texts in batch rows `rows`: one forward over the texts, then one
        per new token."""
        device, n = self.subject.device, len(rows)
        length_B = batch.attention_mask_BT[rows].sum(dim=1).to(device)
        width = int(length_B.max())
        ids_BT = batch.input_ids_BT[rows, :width].to(device)
        mask_BT = batch.attention_mask_BT[rows, :width].to(device)
        valid_BT = batch.valid_BT[rows, :width].to(device)
        # Rows 0..n-1 clean, n..2n-1 steered: the same texts in the same forward.
        ids_RT, mask_RT = ids_BT.repeat(2, 1), mask_BT.repeat(2, 1)
        steer_RT = torch.cat([torch.zeros_like(valid_BT), valid_BT])
        with steered(self.subject.model, self.hookpoint, self.written, steer_RT, self.shift):
            out = self.subject.model(
                input_ids=ids_RT, attention_mask=mask_RT, use_cache=self.continuation_tokens > 1
            )
        last_R = length_B.repeat(2) - 1
        scores = [
            self._scores(out.logits[[b, n + b]], valid_BT[b], int(last_R[b])) for b in range(n)
        ]
        first_R = out.logits[torch.arange(2 * n, device=device), last_R].argmax(dim=-1)
        cache = _returned_cache(out) if self.continuation_tokens > 1 else None
        del out  # the text's logits [2n, T, vocab] are done with before decoding
        continuations = self._decode_rows(self._continue(cache, first_R, mask_RT, last_R + 1))
        return [
            SteeringResult(text, *score[:4], continuations[b], continuations[n + b], score[4])
            for b, (text, score) in enumerate(zip(texts, scores, strict=True))
        ]

    def _scores(
        self, logits_2TV: torch.Tensor, valid_T: torch.Tensor, last: int
    ) -> tuple[float, float, list[TokenShift], list[TokenShift], VocabularyShift | None]:
        """(kl_last, kl_mean, promoted, demoted, vocabulary) from one text's clean and
        steered rows."""
        clean_TV, steered_TV = logits_2TV[:, : last + 1].float().log_softmax(dim=-1)
        kl_T = F.kl_div(clean_TV, steered_TV, log_target=True, reduction="none").sum(dim=-1)
        kl_T = kl_T.clamp_min(0.0)  # KL >= 0; tiny negatives are rounding
        clean_V, steered_V = clean_TV[last], steered_TV[last]
        delta_V, k = steered_V - clean_V, self.top_tokens
        vocabulary = None
        if self.keep_vocabulary:
            likely = math.log(PLAUSIBLE_PROB)
            plausible_V = (clean_V >= likely) | (steered_V >= likely)
            vocabulary = VocabularyShift(delta_V.cpu(), plausible_V.cpu())
        return (
            float(kl_T[last]),
            float(kl_T[valid_T[: last + 1]].mean()),
            self._shifts(_most(delta_V, steered_V, k), delta_V, steered_V),
            self._shifts(_most(-delta_V, clean_V, k), delta_V, steered_V),
            vocabulary,
        )

    def _shifts(
        self, ids_K: torch.Tensor, delta_V: torch.Tensor, steered_V: torch.Tensor
    ) -> list[TokenShift]:
        return [
            TokenShift(
                token=self._token(token_id),
                token_id=token_id,
                delta_logprob=float(delta_V[token_id]),
                steered_prob=float(steered_V[token_id].exp()),
            )
            for token_id in ids_K.tolist()
        ]

    def _token(self, token_id: int) -> str:
        text = token_text(self.subject.tokenizer, token_id)
        return f"<unused id {token_id}>" if text is None else text

    def _continue(
        self,
        cache: Any,
        first_R: torch.Tensor,
        mask_RT: torch.Tensor,
        position_R: torch.Tensor,
    ) -> list[list[int]]:
        """Each row's greedy tokens (`first_R` first), every one fed back through the KV
        cache at its row's next position; the steered rows (the second half) steered."""
        model, n_rows, n_tokens = self.subject.model, first_R.shape[0], self.continuation_tokens
        tokens = [first_R] if n_tokens > 0 else []
        steer_R1 = (torch.arange(n_rows, device=first_R.device) >= n_rows // 2)[:, None]
        cache_keyword = _cache_keyword(model)
        ended_R = self._is_eos(first_R)
        for _ in range(n_tokens - 1):
            if bool(ended_R.all()):
                break
            # The padding between a short row's text and its new tokens stays masked.
            mask_RT = torch.cat([mask_RT, torch.ones_like(mask_RT[:, :1])], dim=1)
            with steered(model, self.hookpoint, self.written, steer_R1, self.shift):
                step = model(
                    input_ids=tokens[-1][:, None],
                    attention_mask=mask_RT,
                    position_ids=position_R[:, None],
                    use_cache=True,
                    **{cache_keyword: cache},
                )
            cache = _returned_cache(step)
            tokens.append(step.logits[:, -1].argmax(dim=-1))
            ended_R |= self._is_eos(tokens[-1])
            position_R = position_R + 1
        if not tokens:
            return [[] for _ in range(n_rows)]
        rows: list[list[int]] = torch.stack(tokens, dim=1).tolist()
        return rows

    def _is_eos(self, tokens_R: torch.Tensor) -> torch.Tensor:
        eos = torch.tensor(sorted(self.eos_ids), dtype=tokens_R.dtype, device=tokens_R.device)
        return torch.isin(tokens_R, eos)

    def _decode_rows(self, tokens_RN: list[list[int]]) -> list[str]:
        """Each row's tokens up to its first end-of-text token, decoded."""
        texts = []
        for row in tokens_RN:
            end = next((i for i, t in enumerate(row) if t in self.eos_ids), len(row))
            texts.append(
                str(self.subject.tokenizer.decode(row[:end], clean_up_tokenization_spaces=False))
            )
        return texts


def token_text(tokenizer: Any, token_id: int) -> str | None:
    """An LM-head id's token as text; None for an id past the vocabulary (LM heads may
    be padded wider than the tokenizer)."""
    if not 0 <= token_id < len(tokenizer):
        return None
    return str(tokenizer.decode([token_id], clean_up_tokenization_spaces=False))


# A token ranks as promoted only if steering makes it at least this likely (demoted: only
# if it was this likely before): at large strengths the final norm squeezes the clean
# logits, and tokens nobody would predict gain the most log-probability (SmolLM2 at
# strength 1e4: `<filename>`, at p ~ 1e-9).
PLAUSIBLE_PROB = 1e-4


def _most(gain_V: torch.Tensor, logprob_V: torch.Tensor, k: int) -> torch.Tensor:
    """The ids of the k largest gains among tokens at least PLAUSIBLE_PROB likely."""
    plausible_V = logprob_V >= math.log(PLAUSIBLE_PROB)
    k = min(k, int(plausible_V.sum()))
    return gain_V.masked_fill(~plausible_V, -math.inf).topk(k).indices


def _eos_ids(subject: SubjectModel) -> frozenset[int]:
    """Tokens that end a text: the generation config's and the tokenizer's."""
    config = getattr(subject.model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    ids = {eos} if isinstance(eos, int) else set(eos or [])
    if subject.tokenizer.eos_token_id is not None:
        ids.add(int(subject.tokenizer.eos_token_id))
    return frozenset(ids)


def _cache_keyword(model: nn.Module) -> str:
    """transformers 5 renamed the forward's `past_key_values` to `cache`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _returned_cache(out: Any) -> Any:
    """The KV cache a forward returned, by its transformers 5 or 4 name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


# -- checks ----------------------------------------------------------------------------------


def _check_request(
    subject: SubjectModel,
    sae: SparseAutoencoder,
    hookpoint: str,
    texts: Sequence[str],
    steering: Steering,
) -> str:
    """The hookpoint the dictionary writes; SteeringError when the request cannot run."""
    check_feature(sae, steering.feature)
    if isinstance(texts, str) or not texts:
        raise SteeringError("give a non-empty list of texts to steer")
    blank = [i for i, text in enumerate(texts) if not text]
    if blank:
        raise SteeringError(f"texts {blank[:5]} are empty; give non-empty texts")
    if sae.cfg.output_hookpoint is None and isinstance(sae, TRANSCODERS):
        raise SteeringError(
            f"the {sae.cfg.architecture} reads {hookpoint} but records no output hookpoint "
            "to write to; set output_hookpoint in its config"
        )
    written = sae.cfg.output_hookpoint or hookpoint
    model = subject.model
    read_at, write_at = parse_hookpoint(model, hookpoint), parse_hookpoint(model, written)
    if written != hookpoint and read_at.depth >= write_at.depth:
        raise SteeringError(
            f"the dictionary reads {hookpoint} and writes {written}, which the model computes "
            "first; its output hookpoint must come after its input"
        )
    for name, width, verb in ((hookpoint, sae.d_in, "reads"), (written, sae.d_out, "writes")):
        actual = hookpoint_width(model, name)
        if actual != width:
            raise SteeringError(
                f"the SAE {verb} {width}-wide activations but {name} of {subject.name} is "
                f"{actual} wide; use an SAE trained on this model and hookpoint"
            )
    return written


def _check_counts(continuation_tokens: int, top_tokens: int, batch_size: int) -> None:
    if continuation_tokens < 0:
        raise SteeringError(f"continuation_tokens must be >= 0, got {continuation_tokens}")
    if top_tokens < 0:
        raise SteeringError(f"top_tokens must be >= 0, got {top_tokens}")
    if batch_size < 1:
        raise SteeringError(f"batch_size must be >= 1, got {batch_size}")
