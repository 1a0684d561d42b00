"""The output side of every feature: decoder logit lens and decoder-cosine neighbours.

Both work on a whole dictionary at once, a chunk of features at a time, and keep only
the top-n per feature, so memory stays bounded (never a full [d_sae, vocab] or
[d_sae, d_sae] matrix) for d_sae up to ~1M and vocabularies of 50-250k tokens. Inputs
may be float32/bfloat16/float16 on CPU or CUDA; each chunk is computed in float32 on the
device of the decoder, and results stay on that device (call `.cpu()` to store them).

Logit lens and the final norm. The unembedding reads the final norm's output, not the
residual stream. For RMSNorm, norm(x) = w * x / rms(x): the positive scalar 1/rms(x)
does not change which tokens a direction promotes, so the linear part of the norm is the
elementwise weight w, and the lens of a decoder direction d is W_U (w * d). We apply it
by default (`final_norm_weight`) because trained norm weights vary a lot across
dimensions (large in a few "massive activation" dimensions), and skipping them ranks
tokens by directions the model never reads at that scale. LayerNorm also subtracts the
mean and adds a bias; the bias is the same for every feature and is left out, as is
any LM-head bias, so the values are each feature's own contribution. Pass
`norm_weight_D=None` (or `apply_final_norm=False`) for the raw W_U d. Values scale
with the decoder row's norm.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from errors import UserError

# Elements of one float32 [chunk, vocab] logit block: 2**27 = 512 MiB. Measured on 2 CPU
# cores (d=576, vocab 49152): 682-row chunks ran ~25% slower than 2730-row chunks.
_BLOCK_ELEMENTS = 1 << 27
# Features per side of a [chunk, chunk] cosine block: 4096**2 float32 = 64 MiB.
_SIMILAR_CHUNK = 4096
Progress = Callable[[int], None]  # called with the number of features finished so far


class OutputSideError(UserError):
    """Inputs to the logit lens or similar-feature search do not fit together."""


@dataclass(frozen=True)
class LogitLens:
    """Top-n promoted and suppressed tokens of each feature's decoder direction.

    Promoted: highest logits first. Suppressed: most negative logits first.
    """

    promoted_ids_FN: torch.Tensor  # int64
    promoted_values_FN: torch.Tensor  # float32
    suppressed_ids_FN: torch.Tensor  # int64
    suppressed_values_FN: torch.Tensor  # float32

    def cpu(self) -> LogitLens:
        return LogitLens(
            self.promoted_ids_FN.cpu(),
            self.promoted_values_FN.cpu(),
            self.suppressed_ids_FN.cpu(),
            self.suppressed_values_FN.cpu(),
        )


def auto_chunk(width: int) -> int:
    """Rows per chunk so that a float32 [chunk, width] score block stays ~512 MiB."""
    return max(1, _BLOCK_ELEMENTS // max(width, 1))


def _check_chunk(chunk: int | None, width: int) -> int:
    if chunk is None:
        return auto_chunk(width)
    if chunk < 1:
        raise OutputSideError(f"chunk must be a positive number of features, got {chunk}")
    return chunk


@torch.no_grad()
def logit_lens(
    sae_W_dec_FD: torch.Tensor,
    unembed_VD: torch.Tensor,
    norm_weight_D: torch.Tensor | None = None,
    n: int = 10,
    chunk: int | None = None,
    progress: Progress | None = None,
) -> LogitLens:
    """Top-n promoted/suppressed token ids and logits of W_U (norm_weight * W_dec[i]).

    `unembed_VD` is the LM head weight [vocab, d_model]; it is cast to float32 once on
    the decoder's device (vocab x d_model x 4 bytes). `chunk` features are scored at a
    time (default: a ~512 MiB [chunk, vocab] block).
    """
    n_features, d_model = sae_W_dec_FD.shape
    vocab = unembed_VD.shape[0]
    if unembed_VD.ndim != 2 or unembed_VD.shape[1] != d_model:
        raise OutputSideError(
            f"unembedding {tuple(unembed_VD.shape)} does not match decoder width {d_model}; "
            "use the LM head of the model the SAE was trained on"
        )
    if norm_weight_D is not None and norm_weight_D.shape != (d_model,):
        raise OutputSideError(f"norm weight {tuple(norm_weight_D.shape)} is not ({d_model},)")
    if not 1 <= n <= vocab:
        raise OutputSideError(f"n={n} must be between 1 and the vocabulary size {vocab}")
    step = _check_chunk(chunk, vocab)
    device = sae_W_dec_FD.device
    unembed_f32_DV = unembed_VD.to(device=device, dtype=torch.float32).T
    scale_D = None if norm_weight_D is None else norm_weight_D.to(device, torch.float32)
    parts: list[tuple[torch.Tensor, ...]] = []
    for start in range(0, n_features, step):
        dirs_CD = sae_W_dec_FD[start : start + step].to(torch.float32)
        if scale_D is not None:
            dirs_CD = dirs_CD * scale_D
        logits_CV = dirs_CD @ unembed_f32_DV
        top = logits_CV.topk(n, dim=1, largest=True, sorted=True)
        bottom = logits_CV.topk(n, dim=1, largest=False, sorted=True)
        parts.append((top.indices, top.values, bottom.indices, bottom.values))
        if progress is not None:
            progress(min(start + step, n_features))
    if not parts:
        empty_ids = torch.empty(0, n, dtype=torch.int64, device=device)
        empty_values = torch.empty(0, n, dtype=torch.float32, device=device)
        return LogitLens(empty_ids, empty_values, empty_ids, empty_values)
    columns = [torch.cat(column) for column in zip(*parts, strict=True)]
    return LogitLens(*columns)


@torch.no_grad()
def similar_features(
    W_dec_FD: torch.Tensor,
    n: int = 10,
    chunk: int | None = None,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each feature, the n other features with the most similar decoder direction.

    Returns (ids_FN int64, cos_FN float32), highest cosine first; a feature is never its
    own neighbour (a duplicate row is found with cosine 1). Blocks of `chunk` query
    features are scored against blocks of `chunk` key features (default 4096: 64 MiB
    [chunk, chunk] blocks) and merged into a running top-n. Zero rows have cosine 0
    with everything.
    """
    n_features = W_dec_FD.shape[0]
    if not 1 <= n <= n_features - 1:
        raise OutputSideError(
            f"n={n} must be between 1 and d_sae - 1 = {n_features - 1} (self is excluded)"
        )
    step = _SIMILAR_CHUNK if chunk is None else _check_chunk(chunk, 1)
    device = W_dec_FD.device
    inv_norm_F = torch.cat(
        [
            W_dec_FD[s : s + step].to(torch.float32).norm(dim=1).clamp_min(1e-12).reciprocal()
            for s in range(0, n_features, step)
        ]
    )
    ids_parts: list[torch.Tensor] = []
    cos_parts: list[torch.Tensor] = []
    for q_start in range(0, n_features, step):
        q_end = min(q_start + step, n_features)
        queries_QD = W_dec_FD[q_start:q_end].to(torch.float32) * inv_norm_F[q_start:q_end, None]
        best_cos_QN, best_ids_QN = _best_keys(W_dec_FD, inv_norm_F, queries_QD, q_start, n, step)
        ids_parts.append(best_ids_QN)
        cos_parts.append(best_cos_QN)
        if progress is not None:
            progress(q_end)
    if not ids_parts:
        return (
            torch.empty(0, n, dtype=torch.int64, device=device),
            torch.empty(0, n, dtype=torch.float32, device=device),
        )
    return torch.cat(ids_parts), torch.cat(cos_parts)


def _best_keys(
    W_dec_FD: torch.Tensor,
    inv_norm_F: torch.Tensor,
    queries_QD: torch.Tensor,
    q_start: int,
    n: int,
    step: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-n (cos, ids) of unit-norm queries against every other feature."""
    n_queries = queries_QD.shape[0]
    device = queries_QD.device
    best_cos_QN = torch.full((n_queries, n), -torch.inf, device=device)
    best_ids_QN = torch.full((n_queries, n), -1, dtype=torch.int64, device=device)
    query_ids_Q = torch.arange(q_start, q_start + n_queries, device=device)
    for k_start in range(0, W_dec_FD.shape[0], step):
        keys_KD = W_dec_FD[k_start : k_start + step].to(torch.float32)
        n_keys = keys_KD.shape[0]
        cos_QK = (queries_QD @ keys_KD.T) * inv_norm_F[k_start : k_start + n_keys]
        key_ids_K = torch.arange(k_start, k_start + n_keys, device=device)
        cos_QK.masked_fill_(query_ids_Q[:, None] == key_ids_K[None, :], -torch.inf)
        top = cos_QK.topk(min(n, n_keys), dim=1)
        merged_cos = torch.cat([best_cos_QN, top.values], dim=1)
        merged_ids = torch.cat([best_ids_QN, key_ids_K[top.indices]], dim=1)
        best_cos_QN, order = merged_cos.topk(n, dim=1)
        best_ids_QN = merged_ids.gather(1, order)
    return best_cos_QN, best_ids_QN


# -- the subject model's side ------------------------------------------------------------


def unembedding(model: Any) -> torch.Tensor:
    """The LM head weight [vocab, d_model] of a HF causal LM."""
    head = model.get_output_embeddings()
    if head is None or getattr(head, "weight", None) is None:
        raise OutputSideError(f"{type(model).__name__} has no output embedding (LM head)")
    weight: torch.Tensor = head.weight
    return weight


def final_norm_weight(model: Any) -> torch.Tensor | None:
    """The elementwise scale of the norm just before the LM head, or None if it has none.

    Found at `model.model.norm` (Llama, Mistral, Qwen, Gemma), `transformer.ln_f`
    (GPT-2) or `gpt_neox.final_layer_norm` (Pythia). Gemma's RMSNorm multiplies by
    (1 + weight), so that is what is returned for it.
    """
    for path in ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm"):
        module: Any = model
        for name in path.split("."):
            module = getattr(module, name, None)
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            if type(module).__name__.startswith("Gemma"):
                return 1.0 + weight.to(torch.float32)
            return weight
    return None


def model_logit_lens(
    sae_W_dec_FD: torch.Tensor,
    model: Any,
    apply_final_norm: bool = True,
    n: int = 10,
    chunk: int | None = None,
    progress: Progress | None = None,
) -> LogitLens:
    """`logit_lens` through a HF causal LM's own LM head (and final norm weight)."""
    norm_weight_D = final_norm_weight(model) if apply_final_norm else None
    return logit_lens(sae_W_dec_FD, unembedding(model), norm_weight_D, n, chunk, progress)


def token_strings(tokenizer: Any, ids: Iterable[int] | torch.Tensor) -> list[str]:
    """Readable token strings: each token decoded alone, as a JSON-quoted string.

    Quoting keeps leading/trailing spaces visible (`" the"` vs `"the"`) and escapes
    newlines and tabs (`"\\n"`). A token that is only part of a UTF-8 character shows its
    raw vocabulary entry in angle brackets (`<0xE2>`, `<âĢ>`); ids past the tokenizer's
    vocabulary (padded LM heads) show as `<unused id N>`.
    """
    id_list: Sequence[int] = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    size = len(tokenizer)
    out: list[str] = []
    for token_id in id_list:
        if not 0 <= token_id < size:
            out.append(f"<unused id {token_id}>")
            continue
        text = tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
        if "\ufffd" in text:
            raw = tokenizer.convert_ids_to_tokens(token_id)
            out.append(raw if raw.startswith("<") and raw.endswith(">") else f"<{raw}>")
        else:
            out.append(json.dumps(text, ensure_ascii=False))
    return out
