"""Judges: what reads an explanation and predicts from it (see `evals.core.Judge`).

`LLMJudge` asks a scorer LLM; `PredicateJudge` (evals.judges.predicate) runs an
explanation's predicate. A scorer charges the judge calls it makes inside an
`llm_client.metered()` block to its Score."""

from evals.judges.llm import LLMJudge

__all__ = ["LLMJudge"]
