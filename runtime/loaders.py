"""Turns settings into the objects lower packages take: model, tokenizer, corpus paths."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probes.model import (
    DEFAULT_PREFIX_TOKEN,
    SubjectModel,
    load_model,
    load_tokenizer,
    prepare_default_model,
)
from runtime.settings import Settings

if TYPE_CHECKING:
    from sae.base import SparseAutoencoder

log = logging.getLogger(__name__)


def models_dir(settings: Settings) -> Path:
    return settings.data_dir / "models"


def default_corpus_dir(settings: Settings) -> Path:
    return settings.data_dir / "corpora" / "default"


def subject_model_path(settings: Settings) -> Path:
    """The configured model, or the embedded default (prepared on first use)."""
    if settings.model:
        return Path(settings.model).expanduser()
    return prepare_default_model(models_dir(settings))


def open_subject_model(settings: Settings) -> SubjectModel:
    """The configured model; the default gets DEFAULT_PREFIX_TOKEN unless one is set.

    A configured .gguf file is dequantized once into the data dir, like the default."""
    prefix = settings.prefix_token
    if prefix is None and not settings.model:
        prefix = DEFAULT_PREFIX_TOKEN
    path = subject_model_path(settings)
    return load_model(
        path, settings.device, settings.dtype, prefix, gguf_cache=models_dir(settings)
    )


def open_tokenizer(settings: Settings) -> Any:
    return load_tokenizer(subject_model_path(settings), gguf_cache=models_dir(settings))


# The default dictionary for the default model: TopK, 8192 features, k=6, on layers.6,
# trained on the corpus read at the settings' context length.
DEFAULT_SAE_NAME = "SmolLM2-135M-Instruct.layers.6.topk-8192-k6"  # a new recipe, a new name


def default_sae_dir(settings: Settings) -> Path:
    return settings.data_dir / "saes" / f"{DEFAULT_SAE_NAME}-ctx{settings.context_length}"


def sae_path(settings: Settings) -> Path:
    """The configured SAE (GLOSSATOR_SAE), or where the default one lives."""
    return Path(settings.sae).expanduser() if settings.sae else default_sae_dir(settings)


def open_sae(settings: Settings, subject: SubjectModel) -> SparseAutoencoder:
    """The configured SAE, on the subject's device, checked against the model's width.

    Raises SAEError when there is none (saying how to get one) or it does not fit.
    """
    from probes.hookpoints import module_hookpoints
    from sae.base import SAEError
    from sae.loading import load_sae

    path = sae_path(settings)
    if not path.exists():
        how = (
            f"GLOSSATOR_SAE={settings.sae} does not exist; point it at an SAE folder"
            if settings.sae
            else f"the default SAE is not in {path} yet; run `glossator prepare` to train it, "
            "or set GLOSSATOR_SAE to an SAE folder"
        )
        raise SAEError(f"no SAE found: {how}")
    chosen = settings.hookpoint if "hookpoint" in settings.model_fields_set else None
    sae = load_sae(
        path,
        device=subject.device,
        expected_d_in=subject.d_model,
        hookpoint=chosen,
        modules=module_hookpoints(subject.model),  # module names map where exact here
    )
    if sae.d_in != subject.d_model:  # formats check this too; never run a misfit
        raise SAEError(
            f"the SAE at {path} reads {sae.d_in}-wide activations but {subject.name} has "
            f"d_model={subject.d_model}; use an SAE trained on this model"
        )
    trained_on = (sae.cfg.model_name or "").rsplit("/", 1)[-1]  # HF ids: org/name
    if trained_on and trained_on != subject.name:
        log.warning(
            "the SAE at %s was trained on %s, not %s", path, sae.cfg.model_name, subject.name
        )
    return sae


def sae_hookpoint(settings: Settings, sae: SparseAutoencoder, explicit: str | None = None) -> str:
    """Where to read `sae`: `explicit` if given (warned when it differs from the SAE's own
    hookpoint), else the hookpoint recorded in the SAE, else a hookpoint the user set
    (GLOSSATOR_HOOKPOINT). An SAE that records none is never run at the default one."""
    from sae.base import SAEError

    own = sae.cfg.hookpoint
    if explicit is not None:
        if own and explicit != own:
            log.warning("reading the SAE at %s, but it was trained on %s", explicit, own)
        return explicit
    if own:
        return own
    if "hookpoint" not in settings.model_fields_set:
        raise SAEError(
            f"the SAE at {sae_path(settings)} does not record the hookpoint it was trained "
            "on; set GLOSSATOR_HOOKPOINT to it (e.g. layers.6, layers.6.mlp)"
        )
    return settings.hookpoint
