"""What `glossator bench` and `POST /bench` may name (explainers, scorers, judges), and
the error for what a benchmark cannot provide."""

from __future__ import annotations

import re

from errors import UserError

EXPLAINERS = ("agent", "oneshot", "toptokens", "tokenstats", "logitlens")
SCORERS = (
    "detection", "fuzzing", "simulation", "embedding", "generative", "predictive", "truth",
    "intruder", "intruder-explained", "output", "output-pick",
)  # fmt: skip
# Named only when asked for: truth needs planted features; the intruder tests are new
# and the explanation-free one needs an LLM judge; the output scorers steer the model
# (an SAE's features only: planted ones have no output side).
OPT_IN = ("truth", "intruder", "intruder-explained", "output", "output-pick")
JUDGES = ("predicate", "llm", "local")


class BenchOptionError(UserError):
    """An explainer, scorer or judge the benchmark cannot provide, with what to do."""


RUN_NAME = re.compile(r"[\w.-]{1,64}")


def check_run_name(name: str) -> str:
    """A benchmark run's name: it names a folder under DATA_DIR/bench, so only letters,
    digits, `_`, `.` and `-`, at most 64, and not only dots (`.`, `..` leave the folder)."""
    if not RUN_NAME.fullmatch(name) or not name.strip("."):
        raise BenchOptionError(
            f"run name {name[:80]!r}: use 1-64 letters, digits, '_', '.' or '-', not only dots"
        )
    return name


def split_names(value: str, known: tuple[str, ...], what: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise BenchOptionError(
            f"unknown {what} {', '.join(unknown) or '(none given)'}: choose from {', '.join(known)}"
        )
    return list(dict.fromkeys(names))
