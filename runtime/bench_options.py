"""What `glossator bench` and `POST /bench` may name (explainers, scorers, judges), and
the error for what a benchmark cannot provide."""

from __future__ import annotations

from errors import UserError

EXPLAINERS = ("agent", "oneshot", "toptokens", "tokenstats")
SCORERS = ("detection", "fuzzing", "simulation", "embedding", "generative", "predictive", "truth")
JUDGES = ("predicate", "llm", "local")


class BenchOptionError(UserError):
    """An explainer, scorer or judge the benchmark cannot provide, with what to do."""


def split_names(value: str, known: tuple[str, ...], what: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise BenchOptionError(
            f"unknown {what} {', '.join(unknown) or '(none given)'}: choose from {', '.join(known)}"
        )
    return list(dict.fromkeys(names))
