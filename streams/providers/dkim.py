"""DKIM signing (RFC 6376, dkimpy) of the bytes ``render_message`` produces (SPEC §13).

For providers that do not sign themselves (SMTP relays, Gmail/Graph raw MIME…), an adapter
names a key per sending domain in its ``config``::

    {"dkim": {"selector": "s2026", "private_key": {"secret": "file:/etc/dkim/example.com.pem"}}}
    {"dkim": {"example.com": {"selector": "s1", "private_key": {"secret": "env:DKIM_EX"}},
              "example.org": {"selector": "s9", "private_key": {"secret": "file:/k.pem"}}}}

(the first form signs for the domain of the adapter's ``from_address``). The key is a
secret reference (``streams.secrets``), resolved at signing time, so a rotated key file is
used from the next message on and the key itself is never stored or logged.

The provider registry calls ``configure(adapter)`` when it builds a provider for an
adapter; ``sign(raw, from_address)`` (called once in ``render_message``) then adds a
``DKIM-Signature`` when the From domain has a key and returns the bytes unchanged otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dkim

from dripdrop_core.models import Adapter
from streams.providers.base import AdapterFailureError
from streams.secrets import SecretError, resolve_secret

SIGNED_HEADERS = (
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"In-Reply-To",
    b"References",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
)
"""SPEC §13. A header listed but absent is signed as absent (RFC 6376 §5.4): it cannot be
added later without breaking the signature."""


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A sending domain's selector and key reference (never the key)."""

    domain: str
    selector: str
    private_key: object


_KEYS: dict[str, DkimKey] = {}
_LOCK = threading.Lock()


def keys_from_config(config: Mapping[str, Any], from_address: str | None) -> list[DkimKey]:
    """The DKIM keys an adapter config declares (see the module docstring).

    Raises:
        ValueError: a malformed ``dkim`` entry (the message names the key, never a secret).
    """
    entry = config.get("dkim")
    if entry is None:
        return []
    if not isinstance(entry, Mapping):
        raise ValueError("dkim must be an object")
    if "selector" in entry:
        domain = (from_address or "").rpartition("@")[2]
        if not domain:
            raise ValueError("dkim without a domain needs the adapter's from_address")
        entry = {domain: entry}
    keys = []
    for domain, spec in entry.items():
        if not isinstance(spec, Mapping) or not spec.get("selector") or "private_key" not in spec:
            raise ValueError(f"dkim.{domain} needs selector and private_key")
        keys.append(
            DkimKey(
                domain=str(domain).strip().lower(),
                selector=str(spec["selector"]).strip(),
                private_key=spec["private_key"],
            )
        )
    return keys


def configure(adapter: Adapter) -> None:
    """Register the signing keys of ``adapter`` (called by the provider registry)."""
    keys = keys_from_config(adapter.config, adapter.from_address)
    with _LOCK:
        for key in keys:
            _KEYS[key.domain] = key


def key_for(from_address: str) -> DkimKey | None:
    domain = from_address.strip().rstrip(">").rpartition("@")[2].lower()
    return _KEYS.get(domain)


def sign(raw: bytes, from_address: str) -> bytes:
    """``raw`` with a ``DKIM-Signature`` first when the From domain has a key.

    relaxed/relaxed canonicalization (survives the header refolding some relays do),
    rsa-sha256 with a PEM RSA key.

    Raises:
        AdapterFailureError: the key cannot be resolved or used (``secret_unavailable``,
            ``dkim_failed``): the send waits, it is never sent unsigned by surprise.
    """
    key = key_for(from_address)
    if key is None:
        return raw
    try:
        private = resolve_secret(key.private_key).encode()
    except SecretError as exc:
        raise AdapterFailureError("secret_unavailable", f"dkim key of {key.domain}") from exc
    try:
        signature: bytes = dkim.sign(
            raw,
            key.selector.encode(),
            key.domain.encode(),
            private,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
            signature_algorithm=b"rsa-sha256",
        )
    except (dkim.DKIMException, ValueError) as exc:
        raise AdapterFailureError("dkim_failed", f"{key.domain}: {type(exc).__name__}") from exc
    return signature + raw


def reset() -> None:
    """Forget every registered key (tests)."""
    with _LOCK:
        _KEYS.clear()
