"""The root of the errors glossator raises on purpose, in two kinds:

- `UserError`: input or configuration the user can fix (a bad path, an unknown feature,
  a malformed spec); the message says what to fix. It is a `ValueError`, so callers
  that catch those keep working.
- `ServiceError`: something glossator relies on is unavailable or failed (Redis, the
  LLM server, the checkpoint store, WordNet's files); the message says what to check.

Any other exception is a bug. The edges (CLI, HTTP service, workers) report the two
kinds as messages and a bug as an internal error.
"""


class GlossatorError(Exception):
    """Every error glossator raises on purpose."""


class UserError(GlossatorError, ValueError):
    """Input or configuration the user can fix; the message says how."""


class ServiceError(GlossatorError, RuntimeError):
    """A service glossator relies on is unavailable or failed; the message says what to
    check."""
