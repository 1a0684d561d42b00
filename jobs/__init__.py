"""Batch jobs: explanation jobs queued in Redis (`explain_jobs`), the queue itself
(`queue`), and the workers that take features from it (`worker`)."""
