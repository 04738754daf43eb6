"""The receiver's refusals, each answered with one HTTP status (401, 400, 503).

Raised by the provider modules; only ``_app.receive`` turns them into responses.
"""

from __future__ import annotations


class UnauthorizedError(Exception):
    """Authentication failed (401). The message says why, never with a secret in it."""


class MalformedError(Exception):
    """Not a request of the provider's documented shape (400)."""


class UnavailableError(Exception):
    """A dependency (secret, certificate host, PostgreSQL) is unavailable now (503)."""
