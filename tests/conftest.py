"""Test-run wiring: the integration tier needs the real services and never skips silently.

``make test`` sets ``DRIPDROP_REQUIRE_SERVICES=1``: a missing Kafka or PostgreSQL is then a
failure. A developer who runs ``pytest -m "not integration"`` on purpose gets the unit tiers only.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

from streams.settings import Settings


def _reachable(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def services() -> Settings:
    """Settings for the real services; fails (CI) or skips (local, explicit) when they are down."""
    settings = Settings()
    db = urlparse(settings.database_url)
    missing = [
        name
        for name, hostport in (
            ("Kafka", settings.kafka_bootstrap.split(",")[0]),
            ("PostgreSQL", f"{db.hostname}:{db.port or 5432}"),
        )
        if not _reachable(hostport)
    ]
    if missing:
        message = f"{' and '.join(missing)} not reachable: run `make services` first"
        if os.environ.get("DRIPDROP_REQUIRE_SERVICES") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return settings
