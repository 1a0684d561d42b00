"""How many features an hour the batch path explains offline (`glossator explain
--features ... --local`, the rules reasoner, the default SAE), against a baseline
revision of this repository on the same features, in the same run.

The baseline is checked out into a temporary git worktree and run with this checkout's
virtual environment (its code imported from the worktree); both runs start a new run of
every feature (`--new`), so neither resumes the other's. Each figure includes the start
(loading the model, SAE and evidence), as a user waits for it.

    .venv/bin/python -m benchmarks.batch_throughput [--features 64] [--baseline bf1d442]

The default baseline is the code path before explanations learned to generalize
(issue 14): its agent explained about 870 features an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "bf1d442"  # main before issue 14


def run(code_dir: Path, features: list[int], concurrency: int) -> float:
    """Wall seconds of one batch explain of `features` with the code in `code_dir`."""
    spec = ",".join(map(str, features))
    command = [sys.executable, "-c", "from cli.app import app; app()", "explain", "--features"]
    command += [spec, "--local"]
    command += ["--concurrency", str(concurrency), "--new", "--json"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=code_dir, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{code_dir}: explain failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def firing_features(n: int, seed: int) -> list[int]:
    from runtime.agent import agent_setup
    from runtime.settings import get_settings

    store = agent_setup(get_settings(), planted=False).deps.store
    return sorted(random.Random(seed).sample(list(store.firing_features()), n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--baseline", default=BASELINE, help="git revision to compare with")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    features = firing_features(args.features, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(worktree), args.baseline],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            baseline = run(worktree, features, args.concurrency)
            current = run(ROOT, features, args.concurrency)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False
            )
    result = {
        "features": len(features),
        "baseline": args.baseline,
        "baseline_seconds": round(baseline, 1),
        "current_seconds": round(current, 1),
        "baseline_per_hour": round(3600 * len(features) / baseline),
        "current_per_hour": round(3600 * len(features) / current),
        "speedup": round(baseline / current, 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"batch explain of {len(features)} features (start included)")
    for column in ("code", "seconds", "features / hour"):
        table.add_column(column)
    table.add_row(
        f"baseline {args.baseline}",
        str(result["baseline_seconds"]),
        str(result["baseline_per_hour"]),
    )
    table.add_row("this checkout", str(result["current_seconds"]), str(result["current_per_hour"]))
    Console().print(table)
    Console().print(f"speedup: {result['speedup']}x")


if __name__ == "__main__":
    main()
