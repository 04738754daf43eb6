"""The tenant's suppression list in the ``index`` table (SPEC §7): look up, add, remove.

Each entry is an address or ``@domain`` (``dripdrop_core.suppression`` owns the key format);
adding or removing one describes its PostgreSQL row as an urgent sink operation.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import datetime
from typing import Any

from dripdrop_core.suppression import recipient_keys
from streams.processor import keys
from streams.processor.rows import suppression_op
from streams.processor.runtime import Outputs

suppression_key = keys.suppression
"""The ``index`` key of one suppression entry (an address or ``@domain``)."""


def is_suppressed(index: MutableMapping[str, Any], tenant_key: str, recipient: str) -> bool:
    """The recipient's address or its whole domain is on the tenant's suppression list."""
    return any(index.get(k) is not None for k in recipient_keys(tenant_key, recipient))


def suppress(
    index: MutableMapping[str, Any],
    tenant: str,
    recipient: str,
    reason: str,
    now: datetime,
    out: Outputs,
    *,
    source: str = "stream",
) -> None:
    """Put an address or ``@domain`` on the tenant's list; the sink writes its row."""
    key = suppression_key(tenant, recipient)
    if index.get(key) is not None:
        return
    index[key] = reason
    out.urgent.append(
        suppression_op(
            {
                "tenant_key": tenant,
                "recipient": recipient,
                "reason": reason,
                "source": source,
                "at": now.isoformat(),
            }
        )
    )
    out.emit("policy.suppressed", tenant, now, reason=reason, source=source)


def unsuppress(
    index: MutableMapping[str, Any], tenant: str, entry: str, now: datetime, out: Outputs
) -> None:
    """Take an entry off the list (its row is deleted); later enrollments may send again."""
    key = suppression_key(tenant, entry)
    if index.get(key) is None:
        return
    del index[key]
    out.urgent.append(suppression_op({"tenant_key": tenant, "recipient": entry, "removed": True}))
    out.emit("policy.unsuppressed", tenant, now)
