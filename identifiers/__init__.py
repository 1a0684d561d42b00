"""Identifiers every layer shares, each parsed in one place: feature selections,
hookpoint names, run ids, and the Redis key schema. It imports nothing of the project."""
