"""The edges: settings, embedded Redis, HTTP service, web UI, CLI and batch workers."""
