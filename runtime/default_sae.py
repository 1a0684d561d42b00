"""Training SAEs on a subject model's activations over a corpus, and the default SAE.

The default SAE (TopK, 8,192 features, k=6, at layers.6 of the default SmolLM2-135M) is
trained once into `loaders.default_sae_dir` by `prepare_default_sae`, from the default
corpus' activation cache (`corpus_activation_cache`): the corpus is read through the
model once (the slow part on a CPU, a few hundred tokens/s on 2 cores), and the SAE
trains for TRAIN_TOKENS steps' worth of tokens drawn from every training text's
activations (1.31M distinct tokens: about 1.5 passes, each in a new random order); the
evidence pass then reads the same cache. Float16 activations: 1e-3 relative rounding,
far below the SAE's error. The held-out split of the corpus is never trained on; the
final metrics are measured on it and stored in the SAE's metadata.

Without a cache (`sae train` without --from-cache), CACHE_TOKENS tokens are read into
memory and trained on in passes (measured: 2M training tokens over a 200k-token cache
reached held-out explained variance 0.89); cache_tokens=0 streams every token.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from errors import UserError
from probes.activation_cache import ActivationCache
from probes.model import SubjectModel
from probes.reader import ActivationReader
from probes.stream import ActivationStream, read_activations
from probes.token_cache import TokenCache
from runtime import loaders
from runtime.caches import corpus_tokens
from runtime.progress import StepProgress
from runtime.settings import Settings
from sae.training import TensorSource, TrainConfig, TrainResult, check_out_dir, train_sae
from sae.training.checkpoint import checkpoints_dir, latest_state, remove_checkpoints

log = logging.getLogger(__name__)

DEFAULT_HOOKPOINT = "layers.6"
# 8,192 features rather than 4,096: same recipe, same held-out explained variance (0.879
# against 0.882), but the features are narrower and more of what they fire on can be
# said. The agent's held-out detection on 40 sampled features, two samples: 0.783 /
# 0.786 against 0.714 / 0.764 at 4,096 (100 features: agent 0.776 against 0.714,
# tokenstats 0.748 against 0.695); a third of the features die (35%), and training
# takes 490 s instead of 204 s on 2 cores. 16,384 features (58% dead) did not detect
# better: 0.777 / 0.793.
DEFAULT_WIDTH = 8192
# k=6 in batches of 2,048 rather than the common k=32 in batches of 4,096: with 4,096
# features, k=32 makes a feature fire in a fifth of the corpus' contexts, and no short
# rule predicts a feature that dense. Synthesised explanations of 40 sampled features,
# held out, two samples: detection 0.636 / 0.619 at k=32, 0.683 / 0.661 at k=16,
# 0.692 / 0.749 at k=8 (4,096 features). At 8,192 features, the agent on four samples
# of 40 (seeds 1-4): k=8 detection 0.786-0.787, generative 0.595-0.662; k=6 at the
# scaled learning rate (2.8e-4) 0.815 / 0.804 / 0.800 / 0.775 but CE-loss recovered
# 0.942; k=6 at 4e-4 0.818 / 0.799 / 0.819 / 0.837, generative 0.703-0.738, held-out
# EV 0.875 and CE-loss recovered 0.954 (as k=8); at 6e-4 detection rose further
# (0.801-0.841) but generative fell to 0.49-0.67.
DEFAULT_K = 6
DEFAULT_LR = 4e-4  # 1.4x Gao et al.'s scaled rate: 977 steps are few
DEFAULT_BATCH_TOKENS = 2048  # twice the steps of the trainer's 4,096 for the same tokens
# AuxK on a quarter of each batch (512 rows, each ranking 288 dead features: every dead
# feature is still ranked dozens of times a step): with half the features dead, AuxK
# over the whole batch took two thirds of a training step on 2 cores.
DEFAULT_AUXK_FRACTION = 0.25
CACHE_TOKENS = 200_000  # activations read once and trained on for several passes
TRAIN_TOKENS = 2_000_000  # training tokens (the default corpus: ~1.5 passes over its cache)
HELDOUT_TOKENS = 20_000  # held-out tokens for the final metrics
READ_BATCH_ROWS = 32  # rows per forward pass while reading activations
CHECKPOINT_EVERY = 100  # steps (~1-2 minutes on 2 CPU cores at 4,096 tokens a step)
_CACHE_FILE = "activations-cache.safetensors"


def _reader(settings: Settings, subject: SubjectModel, hookpoint: str) -> ActivationReader:
    return ActivationReader(
        subject,
        [hookpoint],
        context_length=settings.context_length,
        overflow=settings.overflow,
        batch_size=READ_BATCH_ROWS,
    )


def _read_with_bar(stream: ActivationStream, n_tokens: int, label: str, show: bool) -> torch.Tensor:
    with StepProgress(label, n_tokens, show=show) as bar:
        stream.on_tokens = bar.advance
        try:
            return read_activations(stream, n_tokens, dtype=torch.float16)
        finally:
            stream.on_tokens = None


def _cached_activations(
    stream: ActivationStream, n_tokens: int, out_dir: Path, key: str, show: bool
) -> torch.Tensor:
    """The stream's first `n_tokens` activations, kept in `out_dir/checkpoints` while the
    run is unfinished so that a resumed run does not read the model again."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = checkpoints_dir(out_dir) / _CACHE_FILE
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") == key:
                log.info("reusing the activations cached in %s", path)
                return f.get_tensor("acts")
    acts = _read_with_bar(stream, n_tokens, "reading activations", show)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"acts": acts.contiguous()}, str(tmp), metadata={"key": key})
    tmp.replace(path)
    return acts


def _cache_key(subject: SubjectModel, hookpoint: str, texts: Sequence[str], *extra: Any) -> str:
    digest = hashlib.sha256()
    for part in (subject.name, hookpoint, len(texts), *extra):
        digest.update(repr(part).encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    return digest.hexdigest()


def train_on_texts(
    settings: Settings,
    subject: SubjectModel,
    texts: Sequence[str],
    heldout: Sequence[str],
    cfg: TrainConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    cache_tokens: int = CACHE_TOKENS,
    heldout_tokens: int = HELDOUT_TOKENS,
    checkpoint_every: int = CHECKPOINT_EVERY,
    progress: bool = True,
    source_name: str = "",
    cached: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TrainResult:
    """Train an SAE on `cfg.hookpoint` activations of `texts`; evaluate on `heldout`.

    cached: the (train, held-out) activations from an activation cache of the corpus;
    the model is not run and the SAE trains in passes over all of them. Else
    cache_tokens > 0: read that many tokens once and train in passes over them;
    0: stream every training token from the model (each text read once per pass).
    """
    hookpoint = cfg.hookpoint
    if hookpoint is None:
        raise UserError("the training config names no hookpoint to read")
    check_out_dir(out_dir, resume)  # before minutes of reading activations
    reader = _reader(settings, subject, hookpoint)
    source: TensorSource | ActivationStream
    if cached is not None:
        source = TensorSource(cached[0], seed=cfg.seed)
        cache_tokens = cached[0].shape[0]
    elif cache_tokens > 0:
        # One pass at most: a corpus smaller than the cache is cached whole, not repeated.
        tokens = corpus_tokens(settings, texts, subject.tokenizer)
        once = ActivationStream(reader, texts, hookpoint, epochs=1, seed=cfg.seed, tokens=tokens)
        key = _cache_key(subject, hookpoint, texts, cache_tokens, cfg.seed, reader.context_length)
        acts = _cached_activations(once, cache_tokens, out_dir, key, progress)
        source = TensorSource(acts, seed=cfg.seed)
    else:
        tokens = corpus_tokens(settings, texts, subject.tokenizer)
        source = ActivationStream(
            reader, texts, hookpoint, epochs=None, seed=cfg.seed, tokens=tokens
        )

    def evaluate(sae: Any) -> dict[str, Any]:
        from sae.metrics import quality_metrics

        if not heldout or heldout_tokens <= 0:
            return {}
        if cached is not None:
            acts = cached[1][:heldout_tokens]
        else:
            held_tokens = corpus_tokens(settings, heldout, subject.tokenizer)
            held = ActivationStream(reader, heldout, hookpoint, shuffle=False, tokens=held_tokens)
            acts = _read_with_bar(held, heldout_tokens, "held-out evaluation", progress)
        return quality_metrics(sae.to(subject.device), acts.to(subject.device).float()).summary()

    metadata = {
        "source": {
            "read_from": "model" if cached is None else "activation cache",
            "corpus": source_name,
            "train_texts": len(texts),
            "heldout_texts": len(heldout),
            "cache_tokens": cache_tokens,
            "context_length": reader.context_length,
        }
    }
    return train_sae(
        cfg,
        source,
        out_dir,
        resume=resume,
        progress=progress,
        device=subject.device,
        checkpoint_every=checkpoint_every,
        evaluate=evaluate,
        metadata=metadata,
    )


def corpus_activation_cache(
    settings: Settings,
    subject: SubjectModel,
    hookpoint: str,
    corpus: Path | None,
    progress: bool = True,
) -> tuple[ActivationCache, TokenCache, list[str]]:
    """The activation cache of the whole corpus (`corpus`, else the default one) at
    `hookpoint`, read first when absent (the same cache the evidence pass of any SAE at
    `hookpoint` reads), with its token cache and the corpus texts in its order."""
    from probes.activation_cache import build_activation_cache
    from runtime.caches import activation_plan, pass_reader
    from runtime.evidence import corpus_texts

    texts = corpus_texts(settings, corpus, subject.tokenizer)
    tokens = corpus_tokens(settings, texts, subject.tokenizer)
    reader = pass_reader(settings, subject, hookpoint)
    plan = activation_plan(settings, reader, tokens)
    log.info(
        "activation cache %s: %d of %d tokens, %.2f GiB",
        plan.folder,
        plan.n_tokens,
        plan.corpus_tokens,
        plan.bytes / (1 << 30),
    )
    with StepProgress("reading activations", plan.n_tokens, show=progress and not plan.done) as bar:
        cache = build_activation_cache(plan, reader, tokens, on_tokens=bar.advance)
    return cache, tokens, texts


def cached_training_data(
    settings: Settings,
    subject: SubjectModel,
    hookpoint: str,
    corpus: Path | None,
    heldout: Sequence[str],
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) activations of the whole corpus from its activation cache
    (`corpus_activation_cache`): held-out texts are `heldout`'s."""
    from runtime.caches import split_activations

    cache, tokens, texts = corpus_activation_cache(settings, subject, hookpoint, corpus, progress)
    return split_activations(cache, tokens, texts, heldout)


def is_trained(folder: Path) -> bool:
    return (folder / "cfg.json").is_file() and (folder / "sae_weights.safetensors").is_file()


def default_train_config(subject: SubjectModel) -> TrainConfig:
    return TrainConfig(
        architecture="topk",
        d_in=subject.d_model,
        d_sae=DEFAULT_WIDTH,
        k=DEFAULT_K,
        total_tokens=TRAIN_TOKENS,
        batch_tokens=DEFAULT_BATCH_TOKENS,
        lr=DEFAULT_LR,
        auxk_fraction=DEFAULT_AUXK_FRACTION,
        hookpoint=DEFAULT_HOOKPOINT,
        model_name=subject.name,
    )


def prepare_default_sae(settings: Settings, progress: bool = True) -> Path:
    """The default SAE's folder, training it first when absent (resuming a run that was
    interrupted). Only for the embedded default model."""
    from probes.default_corpus import load_default_corpus

    target = loaders.default_sae_dir(settings)
    if is_trained(target):
        return target
    if settings.model:
        raise UserError(
            f"the default SAE is for the embedded default model, not GLOSSATOR_MODEL="
            f"{settings.model}; train one with `glossator sae train` and set GLOSSATOR_SAE"
        )
    subject = loaders.open_subject_model(settings)
    corpus = load_default_corpus(loaders.default_corpus_dir(settings), tokenizer=subject.tokenizer)
    cfg = default_train_config(subject)
    state = latest_state(target)
    if state is not None and state.get("config") != cfg.model_dump(mode="json"):
        log.warning("the unfinished default SAE run in %s used other settings; restarting", target)
        remove_checkpoints(target)
    log.info("training the default SAE into %s (once)", target)
    cached = cached_training_data(
        settings, subject, DEFAULT_HOOKPOINT, None, corpus.heldout, progress=progress
    )
    train_on_texts(
        settings,
        subject,
        corpus.train,
        corpus.heldout,
        cfg,
        target,
        resume=True,
        progress=progress,
        source_name="default corpus (train split)",
        cached=cached,
    )
    return target


def prepare_default_cache(settings: Settings, progress: bool = True) -> None:
    """The default corpus read once at the default hookpoint into its activation cache
    (when absent): what the default SAE trains on and its evidence is read from."""
    subject = loaders.open_subject_model(settings)
    corpus_activation_cache(settings, subject, DEFAULT_HOOKPOINT, None, progress)
