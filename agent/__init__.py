"""The LangGraph explainer: its state, nodes and graph, the reasoners that propose and
judge hypotheses (agent/rules/: the offline predicate reasoner; llm_reasoner: any
OpenAI-compatible model), the probe runner that batches experiments into forward passes,
the Redis checkpointer, and the explanation and chat stores."""
