"""Running the real `glossator` console script as a subprocess, for the CLI tests."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

GLOSSATOR = str(Path(sys.executable).with_name("glossator"))


def run_cli(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`glossator ARGS` with `env` added to this process's environment."""
    return subprocess.run(
        [GLOSSATOR, *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def planted_cli_env(root: Path, tokenizer: Any, redis_url: str, texts: list[str]) -> dict[str, str]:
    """Settings for CLI runs on planted features: SmolLM2's tokenizer as the model, a
    corpus of `texts`, and the planted evidence built over it by the CLI itself."""
    tokenizer.save_pretrained(root / "tokenizer")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    variables = {
        "GLOSSATOR_MODEL": str(root / "tokenizer"),
        "GLOSSATOR_DATA_DIR": str(root / "data"),
        "GLOSSATOR_DEVICE": "cpu",
        "GLOSSATOR_REDIS_URL": redis_url,
    }
    built = run_cli("evidence", "build", "--planted", "--corpus", str(corpus), env=variables)
    assert built.returncode == 0, built.stderr
    return variables


def bench_cli_env(root: Path, tokenizer: Any, redis_url: str, n_texts: int) -> dict[str, str]:
    """`planted_cli_env` over `n_texts` seeded mixes of the explain tests' phrases, half
    of them asking a question with a year in it, and a wide console for the tables."""
    from tests.cli.test_explain import PHRASES

    rng = random.Random(5)
    texts = [" ".join(rng.sample(PHRASES, 3)) for _ in range(n_texts)]
    texts = [t + f" in {rng.randint(1900, 2000)}?" if i % 2 else t for i, t in enumerate(texts)]
    return {**planted_cli_env(root, tokenizer, redis_url, texts), "COLUMNS": "200"}
