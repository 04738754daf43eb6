"""RFC 5322 Message-IDs and the main-thread chain of an enrollment (SPEC §5.6, §7).

Ids are derived, never random, so a retried step execution stamps the same id.
The chain holds only non-override sends since the last thread break.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from uuid import UUID, uuid5

from dripdrop_core.errors import HeaderInjectionError
from dripdrop_core.models import Frozen

FALLBACK_DOMAIN = "dripdrop.local"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS_MASK = (1 << 48) - 1


class ThreadState(Frozen):
    """The main thread of one enrollment: its Message-IDs, oldest first, with brackets."""

    chain: tuple[str, ...] = ()


def derived_uuid7(seed: UUID, at: datetime) -> UUID:
    """Return a UUIDv7 whose time is ``at`` (ms) and whose random bits come from ``seed``.

    RFC 9562 layout: 48-bit Unix ms, version 7, 12 bits, variant ``10``, 62 bits.
    The 74 "random" bits are taken from ``uuid5(seed, ...)``: same inputs, same id.
    """
    millis = ((at - _EPOCH) // timedelta(milliseconds=1)) & _MS_MASK
    noise = uuid5(seed, "dripdrop.message-id").int
    rand_a = (noise >> 64) & 0xFFF
    rand_b = noise & ((1 << 62) - 1)
    value = (millis << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return UUID(int=value)


def sender_domain(from_address: str | None) -> str:
    """Return the lowercased domain of ``from_address``, else ``dripdrop.local``."""
    if not from_address:
        return FALLBACK_DOMAIN
    _, address = parseaddr(from_address)
    _, at, domain = address.rpartition("@")
    domain = domain.strip().lower()
    if not at or not domain or any(c in domain for c in "<>\r\n "):
        return FALLBACK_DOMAIN
    return domain


def new_message_id(seed: UUID, at: datetime, from_address: str | None) -> str:
    """Return ``<uuid7@sender-domain>`` for a step execution.

    Args:
        seed: The step execution id (stable across retries).
        at: A stable instant of that execution, e.g. its creation time.
        from_address: The adapter's from address, for the domain.
    """
    return f"<{derived_uuid7(seed, at)}@{sender_domain(from_address)}>"


def thread_headers(thread: ThreadState, *, is_override: bool, message_id: str) -> dict[str, str]:
    """Return the threading headers of the next send (SPEC §5.6).

    Main-thread sends reply to the previous chain id and reference the whole
    chain oldest first; an override send, or the first send after a break,
    carries only its own ``Message-ID``.

    Raises:
        HeaderInjectionError: A value contains CR or LF.
    """
    headers = {"Message-ID": message_id}
    if not is_override and thread.chain:
        headers["In-Reply-To"] = thread.chain[-1]
        headers["References"] = " ".join(thread.chain)
    validate_headers(headers)
    return headers


def advance_thread(thread: ThreadState, *, is_override: bool, message_id: str) -> ThreadState:
    """Record a committed send: main-thread ids join the chain, overrides do not."""
    if is_override:
        return thread
    return ThreadState(chain=(*thread.chain, message_id))


def break_thread(thread: ThreadState) -> ThreadState:
    """Start a new chain after a reassign or repin: the next send has no In-Reply-To."""
    del thread  # the old chain is deliberately forgotten
    return ThreadState()


LINE_BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00")
"""CR, LF, and what Python's ``str.splitlines`` (hence the ``email`` package) also breaks
lines at, plus NUL: any of them in a header value could start a header of its own."""


def has_line_break(value: str) -> bool:
    """Whether ``value`` holds a character of ``LINE_BREAKS``."""
    return not LINE_BREAKS.isdisjoint(value)


def validate_headers(headers: dict[str, str]) -> None:
    """Reject header injection: no line break (CR, LF or ``LINE_BREAKS``) in any header
    name or value (SPEC §7).

    Raises:
        HeaderInjectionError: Names the header, never its value.
    """
    for name, value in headers.items():
        if has_line_break(name) or has_line_break(value):
            raise HeaderInjectionError(f"header {name!r} contains CR or LF (or another line break)")
