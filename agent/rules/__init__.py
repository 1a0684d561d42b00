"""The `rules` reasoner: executable predicates synthesised from evidence, no LLM."""
