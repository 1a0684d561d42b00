"""`glossator steer` as a subprocess, on the tiny real Llama with a dictionary whose
feature 2 writes one token's unembedding direction: steering it must make the model
say that token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import run_cli
from tests.steering_helpers import TOKEN_FEATURE, saved_token_dictionary

pytestmark = pytest.mark.slow  # `glossator` processes


@pytest.fixture(scope="module")
def steer_env(
    tiny_llama: Any, tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, str], str]:
    """The CLI's settings for the tiny model and the token's dictionary, and the token."""
    return saved_token_dictionary(tiny_llama, tiny_llama_dir, tmp_path_factory.mktemp("steer"))


def test_steer_makes_the_model_say_the_features_token(
    steer_env: tuple[dict[str, str], str],
) -> None:
    env, token = steer_env
    args = ("steer", str(TOKEN_FEATURE), "The quick brown fox", "--strength", "1000")
    done = run_cli(*args, "--tokens", "4", "--top", "3", "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["feature"] == TOKEN_FEATURE and result["strength"] == 1000
    assert result["promoted"][0]["token"] == token and len(result["promoted"]) <= 3
    assert result["steered_continuation"] == token * 4
    # The random tiny model's next-token distributions are nearly flat: a small KL.
    assert token not in result["clean_continuation"] and result["kl_last"] > 1e-3
    # Without steering's strength the same text reads as clean.
    zero = run_cli("steer", str(TOKEN_FEATURE), "The quick brown fox", "--strength", "0",
                   "--tokens", "4", "--json", env=env)  # fmt: skip
    assert zero.returncode == 0, zero.stderr
    unsteered = json.loads(zero.stdout)
    assert unsteered["steered_continuation"] == unsteered["clean_continuation"]
    assert unsteered["clean_continuation"] == result["clean_continuation"]
    assert unsteered["kl_last"] < 1e-6
    # The terminal view: both continuations and the promoted token.
    view = run_cli(*args, "--tokens", "4", env={**env, "COLUMNS": "160"})
    assert view.returncode == 0, view.stderr
    assert "steered:" in view.stdout and "clean:" in view.stdout and token.strip() in view.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--strength", "1", "--clamp", "2"), "exactly one of strength"),
        ((), "exactly one of strength"),
        (("--times", "3"), "evidence"),  # no evidence was built for this dictionary
    ],
)
def test_steer_bad_requests_say_what_to_give(
    steer_env: tuple[dict[str, str], str], args: tuple[str, ...], message: str
) -> None:
    env, _ = steer_env
    done = run_cli("steer", str(TOKEN_FEATURE), "Some text", *args, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert message in done.stderr


def test_steer_unknown_feature_names_the_range(steer_env: tuple[dict[str, str], str]) -> None:
    env, _ = steer_env
    done = run_cli("steer", "9", "Some text", "--strength", "5", env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "valid indices 0..3" in done.stderr
