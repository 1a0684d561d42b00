"""Settings: the GLOSSATOR_ env prefix, .env files, overrides and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.settings import Settings, SettingsError, get_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No GLOSSATOR_ variables from the outer environment, no stray .env in the cwd."""
    for name in list(os.environ):
        if name.startswith("GLOSSATOR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    settings = get_settings()
    assert settings.data_dir == tmp_path / "xdg" / "glossator"
    assert settings.redis_url is None
    assert (settings.device, settings.dtype) == ("auto", "auto")
    assert settings.model is None and settings.sae is None
    assert settings.hookpoint == "layers.6"
    assert settings.context_length == 128
    assert settings.overflow == "window"
    assert settings.llm_api_key is None
    assert settings.reasoner == "auto" and settings.local_llm is None


def test_data_dir_without_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert get_settings().data_dir == tmp_path / ".local" / "share" / "glossator"


def test_env_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GLOSSATOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GLOSSATOR_REDIS_URL", "redis://example:6379/2")
    monkeypatch.setenv("GLOSSATOR_DEVICE", "cuda:1")
    monkeypatch.setenv("GLOSSATOR_DTYPE", "bfloat16")
    monkeypatch.setenv("GLOSSATOR_CONTEXT_LENGTH", "256")
    monkeypatch.setenv("GLOSSATOR_OVERFLOW", "truncate")
    monkeypatch.setenv("GLOSSATOR_LLM_API_KEY", "sk-secret")
    monkeypatch.setenv("GLOSSATOR_REASONER", " Local ")
    monkeypatch.setenv("GLOSSATOR_LOCAL_LLM", "~/models/chat")
    monkeypatch.setenv("DEVICE", "cpu")  # no prefix: ignored
    settings = get_settings()
    assert settings.data_dir == tmp_path / "data"
    assert settings.redis_url == "redis://example:6379/2"
    assert settings.device == "cuda:1"
    assert settings.dtype == "bfloat16"
    assert settings.context_length == 256
    assert settings.overflow == "truncate"
    assert settings.llm_api_key is not None
    assert settings.llm_api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(settings)
    assert settings.reasoner == "local"
    assert settings.local_llm == Path("~/models/chat").expanduser()


def test_overrides_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLOSSATOR_DEVICE", "cuda")
    assert get_settings(device="cpu").device == "cpu"


def test_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GLOSSATOR_HOOKPOINT=layers.3\nOTHER_TOOL_KEY=x\n")
    assert get_settings().hookpoint == "layers.3"


def test_empty_redis_url_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLOSSATOR_REDIS_URL", "")
    assert get_settings().redis_url is None


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("GLOSSATOR_DEVICE", "gpu", "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ("GLOSSATOR_DEVICE", "cuda:x", "got 'cuda:x'"),
        ("GLOSSATOR_DTYPE", "float64", "dtype must be one of auto, float32, bfloat16"),
        ("GLOSSATOR_CONTEXT_LENGTH", "4", "context_length must be at least 8 tokens, got 4"),
        ("GLOSSATOR_CONTEXT_LENGTH", "many", "valid integer"),
        ("GLOSSATOR_OVERFLOW", "drop", "'window' or 'truncate'"),
        ("GLOSSATOR_REDIS_URL", "localhost:6379", "must start with redis://"),
        ("GLOSSATOR_HOOKPOINT", " ", "hookpoint must name a module"),
        ("GLOSSATOR_REASONER", "gpt", "'auto', 'rules', 'openai' or 'local'"),
    ],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as caught:
        get_settings()
    assert env in str(caught.value)
    assert message in str(caught.value)


def test_unknown_override_is_an_error() -> None:
    with pytest.raises(SettingsError, match=r"Unknown setting.*devce"):
        get_settings(devce="cpu")


def test_settings_class_directly(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path, device="CPU").device == "cpu"
