"""Turns settings into the objects lower packages take: model, tokenizer, corpus paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api.settings import Settings
from probes.model import (
    DEFAULT_PREFIX_TOKEN,
    SubjectModel,
    load_model,
    load_tokenizer,
    prepare_default_model,
)


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
    """The configured model; the default gets DEFAULT_PREFIX_TOKEN unless one is set."""
    prefix = settings.prefix_token
    if prefix is None and not settings.model:
        prefix = DEFAULT_PREFIX_TOKEN
    return load_model(subject_model_path(settings), settings.device, settings.dtype, prefix)


def open_tokenizer(settings: Settings) -> Any:
    return load_tokenizer(subject_model_path(settings))


# The default dictionary for the default model: TopK, 4096 features, on layers.6.
DEFAULT_SAE_NAME = "SmolLM2-135M-Instruct.layers.6.topk-4096"


def default_sae_dir(settings: Settings) -> Path:
    return settings.data_dir / "saes" / DEFAULT_SAE_NAME
