"""Scored explanation benchmarks: explainers to compare (the agent, one-shot, top
tokens, imported), judges (the predicate judge, LLM judges), scorers (detection, fuzzing,
simulation, embedding, generative, predictive, truth), metrics, the runner, and the
report with its tables and plots."""
