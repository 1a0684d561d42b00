"""Agent run ids: "explain:<subject>:<evidence>:<feature>:<config><suffix>". The same
subject, evidence, feature and run configuration name the same run (so a repeated
command or a redelivered job message resumes it); a suffix names a fresh one."""

from __future__ import annotations

from dataclasses import dataclass

KIND = "explain"
MAX_CHARS = 200  # longer ids are refused unread


@dataclass(frozen=True)
class RunId:
    subject: str
    evidence: str
    feature: int
    config: str  # the run configuration's hash, with any suffix after it

    def __str__(self) -> str:
        return f"{KIND}:{self.subject}:{self.evidence}:{self.feature}:{self.config}"


def parse_run_id(text: str) -> RunId | None:
    """The run `text` names, or None when it is not a run id."""
    parts = text.split(":")
    if len(text) > MAX_CHARS or len(parts) < 5 or parts[0] != KIND:
        return None
    subject, evidence, feature = parts[1:4]
    if not (feature.isascii() and feature.isdigit()):
        return None
    return RunId(subject, evidence, int(feature), ":".join(parts[4:]))
