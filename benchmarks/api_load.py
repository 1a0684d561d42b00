"""Load on the activations endpoint: p50/p99 latency and throughput under concurrent
requests over loopback, against baselines measured in the same run.

The service runs as its own process (`glossator serve`, as users run it); this process
only sends requests. Each level sends the same texts (one text per request, seeded
sample of the default corpus) from `concurrency` clients at once, bounded by a request
count and a time limit. Baselines:

- `direct`: the same texts through the feature source in-process, one at a time (no
  HTTP, no batching): what a request costs the model;
- concurrency 1 over HTTP: what HTTP and JSON add to that.

Concurrent requests coalesce into shared forwards (ProbeRunner), so throughput should
grow with concurrency until the CPU is busy; the ratios say by how much.

    .venv/bin/python -m benchmarks.api_load [--planted] [--levels 1,4,16]
        [--requests 200] [--max-seconds 60] [--top 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from runtime import loaders
from runtime.settings import get_settings

GLOSSATOR = str(Path(sys.executable).with_name("glossator"))
TEXT_CHARS = 300  # a request's text: a paragraph, about 70 tokens


def sample_texts(n: int, seed: int = 0) -> list[str]:
    from probes.default_corpus import load_default_corpus

    settings = get_settings()
    corpus = load_default_corpus(loaders.default_corpus_dir(settings), progress=False)
    texts = [t[:TEXT_CHARS] for t in corpus.heldout if len(t.strip()) > 40]
    return random.Random(seed).sample(texts, min(n, len(texts)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(planted: bool, port: int) -> subprocess.Popen[bytes]:
    args = [GLOSSATOR, "serve", "--port", str(port), *(["--planted"] if planted else [])]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(url: str, server: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {server.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server was not ready in time")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def load(
    url: str, texts: list[str], concurrency: int, requests: int, max_s: float, top: int
) -> dict[str, Any]:
    """`requests` requests (cycling through `texts`) from `concurrency` clients."""
    latencies: list[float] = []
    errors: list[str] = []
    tokens = 0
    next_index = 0
    start = time.perf_counter()

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_index, tokens
        while next_index < requests and time.perf_counter() - start < max_s:
            text = texts[next_index % len(texts)]
            next_index += 1
            sent = time.perf_counter()
            reply = await http.post(f"{url}/activations", json={"texts": [text], "top": top})
            latencies.append(time.perf_counter() - sent)
            if reply.status_code != 200:
                errors.append(f"{reply.status_code}: {reply.text[:200]}")
                continue
            tokens += len(reply.json()["texts"][0]["tokens"])

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "p50_ms": round(1000 * percentile(latencies, 0.5), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "requests_per_s": round(len(latencies) / wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "seconds": round(wall, 1),
    }


def direct(texts: list[str], planted: bool, requests: int, max_s: float) -> dict[str, Any]:
    """The same texts through the feature source in this process, one at a time."""
    from runtime.agent import agent_setup

    setup = agent_setup(get_settings(), planted)
    source = setup.deps.probe.source
    source.activations(texts[:2])  # warm up
    latencies = []
    start = time.perf_counter()
    for i in range(requests):
        if time.perf_counter() - start > max_s:
            break
        sent = time.perf_counter()
        source.activations([texts[i % len(texts)]])
        latencies.append(time.perf_counter() - sent)
    wall = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "p50_ms": round(1000 * percentile(latencies, 0.5), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "requests_per_s": round(len(latencies) / wall, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planted", action="store_true", help="planted features (no model)")
    parser.add_argument("--levels", default="1,4,16", help="concurrency levels")
    parser.add_argument("--requests", type=int, default=200, help="requests per level")
    parser.add_argument("--max-seconds", type=float, default=60, help="time limit per level")
    parser.add_argument("--top", type=int, default=5, help="features per token in replies")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    texts = sample_texts(64)

    baseline = direct(texts, args.planted, args.requests, args.max_seconds)
    print(json.dumps({"direct": baseline}), flush=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(args.planted, port)
    try:
        wait_ready(url, server)
        # Warm up: first forwards allocate; not measured.
        asyncio.run(load(url, texts, 2, 8, 30, args.top))
        results = []
        for level in levels:
            result = asyncio.run(load(url, texts, level, args.requests, args.max_seconds, args.top))
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    one = next((r for r in results if r["concurrency"] == 1), results[0])
    summary = {
        "cpu_threads": os.cpu_count(),
        "direct_requests_per_s": baseline["requests_per_s"],
        "http_c1_over_direct_p50": round(one["p50_ms"] / max(baseline["p50_ms"], 1e-9), 2),
        "throughput_vs_c1": {
            r["concurrency"]: round(r["requests_per_s"] / one["requests_per_s"], 2) for r in results
        },
        "errors": sum(r["errors"] for r in results),
    }
    print(json.dumps({"summary": summary}, indent=2))
    if summary["errors"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
