"""Identifiers every layer shares, each parsed in one place: feature ids and selections,
hookpoint names, run ids, and the Redis key schema. Of the project, it imports only the
error root (`errors`)."""
