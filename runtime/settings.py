"""glossator's settings: environment variables prefixed GLOSSATOR_, an optional .env file,
and keyword overrides. Only `api/` reads these; lower packages take explicit arguments."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from errors import UserError

ENV_PREFIX = "GLOSSATOR_"
DTYPES = ("auto", "float32", "bfloat16", "float16")
# auto: openai when an LLM server is configured, else the best offline backend.
Reasoners = Literal["auto", "rules", "openai", "local"]
_DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")
MIN_CONTEXT_LENGTH = 8


class SettingsError(UserError):
    """The settings (environment, .env file or overrides) hold an invalid value."""


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/glossator`, else `~/.local/share/glossator` (XDG base dir spec:
    an unset, empty or relative XDG_DATA_HOME is ignored)."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "glossator"


class Settings(BaseSettings):
    """Every knob glossator reads from its environment, validated once at the edge."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",  # a shared .env may hold other tools' keys
        validate_default=True,
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    redis_url: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    model: str | None = None
    hookpoint: str = "layers.6"
    context_length: int = 128  # as SAELens trains small models and Neuronpedia shows them
    overflow: Literal["window", "truncate"] = "window"
    # A token put before every text (e.g. a BOS) when the tokenizer adds none;
    # unset: the tokenizer's own prefix (the default model gets <|endoftext|>).
    prefix_token: str | None = None
    sae: str | None = None
    # The most disk an activation cache may take (GiB); a larger corpus is cached in part.
    activation_cache_gb: float = Field(default=8.0, gt=0)
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str | None = None
    # Seconds an LLM request may take before it is given up and asked again with twice
    # as long (up to 4x): a small model on a few CPU cores writes a 1,024-token reply in
    # minutes. `glossator llm check` suggests a value for the configured server.
    llm_timeout: float = Field(default=60.0, gt=0)
    llm_concurrency: int = Field(default=4, ge=1)  # requests in flight to the LLM server
    # Tokens a reply may take; replies with an entry per hypothesis get this for each two.
    llm_max_tokens: int = Field(default=1024, ge=16)
    reasoner: Reasoners = "auto"
    # A Hugging Face chat-model folder for the `local` reasoner; unset: the default
    # SmolLM2-135M-Instruct (the default subject model's folder).
    local_llm: Path | None = None
    # The HTTP service and the workers. Writes and spending (explain, chat, jobs, bench)
    # always need an API key; reads need one only when read_requires_key is set.
    read_requires_key: bool = False
    max_text_chars: int = Field(default=4000, ge=1)  # per text sent to the API
    max_texts_per_request: int = Field(default=64, ge=1)
    max_features_per_job: int = Field(default=100_000, ge=1)
    max_runs_per_key: int = Field(default=4, ge=1)  # agent runs and chat turns at once
    # The largest HTTP request body, in bytes (64 texts of 4000 characters fit, escaped).
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    worker_concurrency: int = Field(default=8, ge=1)  # agent runs at once per worker
    # helper processes the rules reasoner synthesises in (0: in the serving process)
    synthesis_processes: int = Field(default=1, ge=0)
    # Per-key quotas, counted in Redis: chat threads a key may own in all (a thread is
    # kept for good), and jobs it may have queued or running at once.
    max_chat_threads_per_key: int = Field(default=500, ge=1)
    max_open_jobs_per_key: int = Field(default=10, ge=1)
    # POST /activations without a key: a token bucket per client address, counted in
    # texts, refilled this many a minute (a full request of long texts is ~8 s of CPU).
    anonymous_texts_per_minute: int = Field(default=64, ge=1)

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator(
        "redis_url",
        "model",
        "prefix_token",
        "sae",
        "llm_base_url",
        "llm_api_key",
        "llm_model",
        "local_llm",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # `GLOSSATOR_REDIS_URL=` (set but empty) means "not set".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise UserError(
                f"redis_url must start with redis://, rediss:// or unix://, got {value!r}"
            )
        return value

    @field_validator("reasoner", mode="before")
    @classmethod
    def _reasoner(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("local_llm")
    @classmethod
    def _local_llm(cls, value: Path | None) -> Path | None:
        return value.expanduser().absolute() if value is not None else None

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        value = value.strip().lower()
        if not _DEVICE_RE.fullmatch(value):
            raise UserError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")
        return value

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in DTYPES:
            raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {value!r}")
        return value

    @field_validator("hookpoint")
    @classmethod
    def _hookpoint(cls, value: str) -> str:
        if not value.strip():
            raise UserError("hookpoint must name a module, e.g. 'layers.6'")
        return value.strip()

    @field_validator("context_length")
    @classmethod
    def _context_length(cls, value: int) -> int:
        if value < MIN_CONTEXT_LENGTH:
            raise UserError(
                f"context_length must be at least {MIN_CONTEXT_LENGTH} tokens, got {value}"
            )
        return value


def _explain(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {ENV_PREFIX}{field.upper()} ({field}): {message}")
    return "Invalid glossator settings:\n" + "\n".join(lines)


def get_settings(**overrides: Any) -> Settings:
    """Read the settings; keyword overrides win over the environment and .env.

    Raises SettingsError naming each bad variable (e.g. GLOSSATOR_DEVICE) and why.
    """
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise SettingsError(
            f"Unknown setting(s) {', '.join(unknown)}; known: {', '.join(Settings.model_fields)}"
        )
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SettingsError(_explain(error)) from error
