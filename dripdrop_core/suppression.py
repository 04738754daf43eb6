"""Suppression entries (SPEC §7): an address or a whole domain, tenant-scoped.

Pure: parses what an operator typed or a CSV holds into one normalized form, and names the
keys the processor's ``index`` table stores them under. A domain entry is kept as
``@example.com`` (the form a recipient's domain is looked up by), an address as
``someone@example.com``; both lower-cased and trimmed, like ``suppressions.recipient_normalized``.
A domain entry matches that exact domain, not its subdomains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from dripdrop_core.errors import InputError

SUPPRESSION_REASONS = ("unsubscribe", "bounce", "complaint", "manual", "provider_block")
"""Why a recipient is suppressed; the same list as the table's check constraint."""

MAX_ENTRY_LENGTH = 320
"""RFC 5321's longest path (64 local + @ + 255 domain)."""

_DOMAIN = re.compile(r"^(?=.{1,255}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")
_LOCAL = re.compile(r"^[^\s@<>()\[\]\\,;:\"]{1,64}$")


@dataclass(frozen=True, slots=True)
class SuppressionEntry:
    """One normalized entry: ``value`` is ``local@domain`` or ``@domain``."""

    kind: Literal["address", "domain"]
    value: str


def parse_entry(text: str) -> SuppressionEntry:
    """``a@b.com`` → address; ``b.com`` or ``@b.com`` → domain. Raises ``InputError``."""
    value = (text or "").strip().lower()
    if not value or len(value) > MAX_ENTRY_LENGTH or any(c in value for c in "\r\n\t "):
        raise InputError(f"not an email address or domain: {text[:80]!r}", code="input")
    local, at, domain = value.rpartition("@")
    if not at:
        local, domain = "", value
    if not _DOMAIN.match(domain) or (at and local and not _LOCAL.match(local)):
        raise InputError(f"not an email address or domain: {text[:80]!r}", code="input")
    if local:
        return SuppressionEntry("address", f"{local}@{domain}")
    return SuppressionEntry("domain", f"@{domain}")


def parse_reason(reason: str) -> str:
    value = (reason or "").strip().lower()
    if value not in SUPPRESSION_REASONS:
        raise InputError(
            f"unknown suppression reason {reason[:40]!r}; one of {', '.join(SUPPRESSION_REASONS)}"
        )
    return value


def normalize(value: str) -> str:
    """The stored form of an entry or a recipient address (``recipient_normalized``)."""
    return value.strip().lower()


def suppression_key(tenant_key: str, value: str) -> str:
    """The ``index`` table key of one entry (an address, or ``@domain``)."""
    return f"supp:{tenant_key}:{normalize(value)}"


def recipient_domain(recipient: str) -> str:
    """The domain part of an address, lower-cased (``""`` without one)."""
    return normalize(recipient).rpartition("@")[2].strip(">")


def recipient_keys(tenant_key: str, recipient: str) -> tuple[str, str]:
    """The two keys that suppress ``recipient``: its address and its domain."""
    return suppression_key(tenant_key, normalize(recipient)), suppression_key(
        tenant_key, "@" + recipient_domain(recipient)
    )
