"""The API face of the suppression lists (``streams/suppressions.py`` does the work):
tenant checks and ``Accepted`` results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Literal

from streams.api._context import Context
from streams.api._models import Accepted
from streams.api._validation import check_nonempty
from streams.kafka import Delivery
from streams.suppressions import ImportResult, Suppression, SuppressionLists, as_rows


def _accepted(command: str, tenant_key: str, event_id: str, delivery: Delivery) -> Accepted:
    return Accepted(
        command=command,
        tenant_key=tenant_key,
        event_id=event_id,
        topic=delivery.topic,
        partition=delivery.partition,
        offset=delivery.offset,
    )


class SuppressionCommands:
    """The suppression calls of ``DripDrop``."""

    def __init__(self, context: Context) -> None:
        self._lists = SuppressionLists(
            context.settings, context.engine, context.publisher, context.codecs
        )

    def add_suppression(self, entry: str, *, tenant_key: str, reason: str, source: str) -> Accepted:
        check_nonempty("tenant_key", tenant_key)
        record, delivery = self._lists.add(
            entry, tenant_key=tenant_key, reason=reason, source=source
        )
        return _accepted("suppress", tenant_key, record["event_id"], delivery)

    def import_suppressions(
        self,
        rows: Iterable[str | tuple[int, str, str | None, str | None]],
        *,
        tenant_key: str,
        reason: str,
        source: str,
        progress: Callable[[int], None] | None,
    ) -> ImportResult:
        check_nonempty("tenant_key", tenant_key)
        return self._lists.import_rows(
            as_rows(rows), tenant_key=tenant_key, reason=reason, source=source, progress=progress
        )

    def remove_suppression(self, entry: str, *, tenant_key: str) -> Accepted:
        check_nonempty("tenant_key", tenant_key)
        record, delivery = self._lists.remove(entry, tenant_key=tenant_key)
        return _accepted("unsuppress", tenant_key, record["event_id"], delivery)

    def iter_suppressions(
        self, *, tenant_key: str, kind: Literal["address", "domain"] | None
    ) -> Iterator[Suppression]:
        return self._lists.list(tenant_key=tenant_key, kind=kind)
