"""How many features an hour the batch path explains offline (`glossator explain
--features ... --local`, the rules reasoner), against a baseline revision of this
repository on the same features of the same SAE, in the same run.

The baseline is checked out into a temporary git worktree and run with this checkout's
virtual environment, through its own `glossator` entry point and with nothing imported
from this checkout. Older revisions read older evidence formats, so the baseline gets a
data dir of its own (the model, SAEs and corpora linked from this one) and builds its
evidence there first, over `--baseline-tokens` tokens (its old default; not timed).
Both runs explain the default SAE of this checkout and start a new run of every feature
(`--new`). Each figure includes the start (loading the model, SAE and evidence), as a
user waits for it.

    .venv/bin/python -m benchmarks.batch_throughput [--features 64] [--baseline bf1d442]

The default baseline is the code path before explanations learned to generalize
(issue 14).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "bf1d442"  # main before issue 14
SHARED = ("models", "saes", "corpora")  # what the baseline's data dir links to
MIN_FIRINGS = 200  # sampled features fire often enough to fire in the baseline's evidence

# Runs a revision's own entry point with nothing imported from this checkout: the
# editable install's finder would fill in any package the revision lacks (the CLI moved
# from api/ to cli/) with this checkout's.
BOOT = (
    "import sys; "
    "sys.meta_path[:] = "
    "[f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')]; "
    "from {module} import {function} as main; main()"
)


def entry_point(code_dir: Path) -> tuple[str, str]:
    """The `glossator` script's module and function at the revision in `code_dir`."""
    scripts = tomllib.loads((code_dir / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["glossator"].split(":")
    return module, function


def glossator(code_dir: Path, args: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one `glossator ARGS` with the code in `code_dir`."""
    module, function = entry_point(code_dir)
    command = [sys.executable, "-c", BOOT.format(module=module, function=function), *args]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=code_dir, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(
            f"{code_dir}: {args[0]} failed ({done.returncode}):\n{done.stderr[-2000:]}"
        )
    return seconds


def explain(code_dir: Path, features: list[int], concurrency: int, env: dict[str, str]) -> float:
    spec = ",".join(map(str, features))
    args = ["explain", "--features", spec, "--local", "--concurrency", str(concurrency)]
    return glossator(code_dir, [*args, "--new", "--json"], env)


def sampled_features(n: int, seed: int) -> tuple[list[int], Path, Path]:
    """n features of the default SAE that fire often, the SAE's folder, and the data dir."""
    from runtime import loaders
    from runtime.agent import agent_setup
    from runtime.settings import get_settings

    settings = get_settings()
    store = agent_setup(settings, planted=False).deps.store
    firing = [f for f in store.firing_features() if store.stats(f).fired_tokens >= MIN_FIRINGS]
    features = sorted(random.Random(seed).sample(firing, n))
    return features, loaders.default_sae_dir(settings), settings.data_dir


def baseline_data_dir(tmp: Path, data_dir: Path) -> Path:
    own = tmp / "data"
    own.mkdir()
    for name in SHARED:
        if (data_dir / name).exists():
            (own / name).symlink_to(data_dir / name)
    return own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--baseline", default=BASELINE, help="git revision to compare with")
    parser.add_argument("--baseline-tokens", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    features, sae_dir, data_dir = sampled_features(args.features, args.seed)
    env = {**os.environ, "GLOSSATOR_SAE": str(sae_dir)}
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(worktree), args.baseline],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        own = {**env, "GLOSSATOR_DATA_DIR": str(baseline_data_dir(Path(tmp), data_dir))}
        try:
            build = ["evidence", "build", "--max-tokens", str(args.baseline_tokens), "--no-redis"]
            glossator(worktree, build, own)
            baseline = explain(worktree, features, args.concurrency, own)
            current = explain(ROOT, features, args.concurrency, env)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False
            )
    result = {
        "features": len(features),
        "sae": str(sae_dir),
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
    console = Console()
    console.print(table)
    console.print(f"speedup: {result['speedup']}x")


if __name__ == "__main__":
    main()
