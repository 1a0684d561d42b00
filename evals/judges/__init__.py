"""Judges: what reads an explanation and predicts from it (see `evals.core.Judge`).

`LLMJudge` asks a scorer LLM; `metered()` collects the LLM usage of the judge calls
made inside it (what a scorer charges to its Score)."""

from evals.judges.llm import LLMJudge, metered

__all__ = ["LLMJudge", "metered"]
