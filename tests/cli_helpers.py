"""Running the real `glossator` console script as a subprocess, for the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
