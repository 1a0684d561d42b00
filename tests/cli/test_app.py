"""The `glossator` console script, run as a real subprocess on a tiny real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probes.model import load_model
from probes.reader import ActivationReader
from tests.cli_helpers import run_cli

pytestmark = pytest.mark.slow  # `glossator` processes on the real default model


@pytest.fixture
def cli_env(tiny_llama_dir: Path, tmp_path: Path) -> dict[str, str]:
    return {
        "GLOSSATOR_MODEL": str(tiny_llama_dir),
        "GLOSSATOR_DATA_DIR": str(tmp_path / "data"),
        "GLOSSATOR_DEVICE": "cpu",
        "GLOSSATOR_HOOKPOINT": "layers.1",
    }


def test_activations_json_matches_the_reader(cli_env: dict[str, str], tiny_llama_dir: Path) -> None:
    text = "The quick brown fox."
    result = run_cli("activations", text, "--hookpoint", "layers.2", "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["hookpoint"] == "layers.2"
    assert "".join(t["text"] for t in doc["tokens"]) == text
    expected = ActivationReader(load_model(tiny_llama_dir), ["layers.2"]).read([text])[0]
    norms = expected.acts_TD["layers.2"].norm(dim=-1).tolist()
    assert [t["norm"] for t in doc["tokens"]] == pytest.approx(norms, rel=1e-4)


def test_activations_table_reads_stdin(cli_env: dict[str, str]) -> None:
    result = run_cli("activations", "-", env=cli_env, stdin="red green blue")
    assert result.returncode == 0, result.stderr
    assert "norm" in result.stdout and "green" in result.stdout


def test_bad_input_gets_a_clear_error(cli_env: dict[str, str]) -> None:
    unknown = run_cli("activations", "hi", "--hookpoint", "layers.9", env=cli_env)
    assert unknown.returncode == 2
    assert "unknown hookpoint" in unknown.stderr and "0..3" in unknown.stderr
    empty = run_cli("activations", "   ", env=cli_env)
    assert empty.returncode == 2 and "empty" in empty.stderr
    bad_env = run_cli("activations", "hi", env={**cli_env, "GLOSSATOR_DEVICE": "tpu"})
    assert bad_env.returncode == 2 and "GLOSSATOR_DEVICE" in bad_env.stderr
    missing = run_cli("activations", "hi", env={**cli_env, "GLOSSATOR_MODEL": "/nonexistent"})
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_planted_json(cli_env: dict[str, str], tmp_path: Path) -> None:
    spec = tmp_path / "spec.jsonl"
    spec.write_text(
        json.dumps(
            {
                "id": "fox",
                "description": "the word fox",
                "rule": {"words": ["fox"], "case_sensitive": False},
                "activation": 3.0,
            }
        )
        + "\n"
    )
    text = "The quick brown Fox jumps."
    result = run_cli("planted", text, "--spec", str(spec), "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    tokens = json.loads(result.stdout)["tokens"]
    assert "".join(t["text"] for t in tokens) == text
    active = [t for t in tokens if t["activations"]]
    assert active and all(t["activations"] == {"fox": 3.0} for t in active)
    assert all("Fox" in text[t["start"] : t["end"]] or t["text"] in "Fox" for t in active)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    bad = run_cli("planted", text, "--spec", str(broken), env=cli_env)
    assert bad.returncode == 2 and "broken.jsonl:1" in bad.stderr
