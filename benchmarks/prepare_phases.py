"""`glossator prepare` from an empty data dir, timed by phase, as a new user runs it.

Runs this checkout's `glossator prepare --json` with GLOSSATOR_DATA_DIR set to a new
temporary folder (nothing is reused: the model is dequantized, the corpus built, read
through the model once into its activation cache, the default SAE trained from the cache
and the evidence built from it), and prints each phase's seconds, the tokens/s of the
read, the training and the evidence pass, and what the SAE measured on held-out text.
`--baseline REV` also runs a revision of this repository (a git worktree, its own entry
point, this virtual environment) in a data dir of its own, in the same run, and prints
the ratio of the totals. Each run takes 12-25 minutes on 2 CPU cores.

    .venv/bin/python -m benchmarks.prepare_phases [--baseline 4f1c2e0] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.batch_throughput import BOOT, ROOT, entry_point


def run_prepare(checkout: Path, data_dir: Path) -> dict[str, Any]:
    """`glossator prepare --json` of `checkout` into `data_dir`, with its wall time."""
    env = {**os.environ, "GLOSSATOR_DATA_DIR": str(data_dir), "PYTHONPATH": str(checkout)}
    module, function = entry_point(checkout)
    command = [sys.executable, "-c", BOOT.format(module=module, function=function)]
    started = time.monotonic()
    done = subprocess.run(
        [*command, "prepare", "--json"], cwd=checkout, env=env, capture_output=True, text=True
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"prepare in {checkout} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    summary["wall_seconds"] = round(wall, 1)
    return summary


def sae_facts(summary: dict[str, Any]) -> dict[str, Any]:
    """Training and held-out numbers from the prepared SAE's metadata."""
    cfg = json.loads((Path(summary["sae"]) / "cfg.json").read_text())
    meta = cfg.get("metadata", {}).get("glossator", {})
    training, heldout = meta.get("training", {}), meta.get("heldout", {})
    source = meta.get("source", {})
    return {
        "context_length": source.get("context_length"),
        "distinct_training_tokens": source.get("cache_tokens"),
        "training_tokens": training.get("tokens"),
        "training_tokens_per_s": training.get("tokens_per_s"),
        "heldout_explained_variance": heldout.get("explained_variance"),
        "training_dead_fraction": training.get("dead_fraction"),
    }


def rates(summary: dict[str, Any]) -> dict[str, float]:
    seconds, tokens = summary["seconds"], summary["corpus_tokens"]
    return {
        phase: round(tokens / seconds[phase])
        for phase in ("read_activations", "evidence")
        if seconds.get(phase)
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", default=None, help="also run this git revision")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="glossator-bench-prepare-"))
    results: dict[str, Any] = {}
    try:
        current = run_prepare(ROOT, work / "data")
        results["checkout"] = {
            "seconds": current["seconds"],
            "wall_seconds": current["wall_seconds"],
            "tokens_per_s": rates(current),
            "corpus_tokens": current["corpus_tokens"],
            "sae": sae_facts(current),
        }
        if args.baseline:
            tree = work / "baseline"
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(tree), args.baseline],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            try:
                base = run_prepare(tree, work / "baseline-data")
            finally:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False
                )
            results["baseline"] = {
                "revision": args.baseline,
                "seconds": base["seconds"],
                "wall_seconds": base["wall_seconds"],
                "tokens_per_s": rates(base),
                "sae": sae_facts(base),
            }
            results["baseline_over_checkout"] = round(
                base["wall_seconds"] / current["wall_seconds"], 2
            )
    finally:
        if args.keep:
            results["kept"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
