"""The predicate language: executable explanations, read token by token. A predicate says
on which tokens a feature fires ("the words for animals", "the first word of a line",
"any form of change") and describes itself in plain words. The rules reasoner
synthesises them (agent/rules/), the predicate judge runs them (evals/judges/)."""
