"""Suppression lists (SPEC §4, §7): add, import, remove, list, export — tenant-scoped.

An entry is an address or a whole domain (``dripdrop_core.suppression``). Changes travel as
``suppress`` / ``unsuppress`` records on ``health-signals`` (keyed by ``tenant_key``, like
every other suppression the processor learns of: bounces, complaints, unsubscribes), so the
processor's changelogged ``index`` table is the list it checks at enrollment and at send,
and its sink writes the authoritative ``dripdrop.suppressions`` rows. A change is therefore
visible to ``list`` once the worker has applied it, a moment after the call returns.
"""

from __future__ import annotations

import csv
import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from sqlalchemy import Engine, select

from dripdrop_core.errors import InputError
from dripdrop_core.suppression import SuppressionEntry, parse_entry, parse_reason
from streams.codecs import Codecs
from streams.db.tables import suppressions
from streams.kafka import Delivery, Publisher, PublishError
from streams.settings import Settings

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

FLUSH_EVERY = 10_000
"""Records produced between two waits for the broker (librdkafka queues 100,000)."""

CSV_COLUMNS = ("entry", "reason", "source")


class Suppression(BaseModel):
    """One row of ``dripdrop.suppressions``."""

    tenant_key: str
    entry: str
    kind: Literal["address", "domain"]
    reason: str
    source: str | None
    inserted_at: datetime


@dataclass
class ImportResult:
    """What an import did: records accepted by the broker, lines refused (line, why)."""

    accepted: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)


def signal(
    kind: Literal["suppress", "unsuppress"],
    tenant_key: str,
    entry: SuppressionEntry,
    *,
    reason: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """The ``health-signals`` record of one list change."""
    return {
        "event_id": str(uuid.uuid4()),
        "tenant_key": tenant_key,
        "occurred_at": datetime.now(UTC),
        "kind": kind,
        "recipient": entry.value,
        "reason": reason,
        "source": source,
    }


def _source(source: str) -> str:
    value = (source or "").strip()
    if not value or len(value) > 200 or any(c in value for c in "\r\n"):
        raise InputError("source must be a non-empty line of at most 200 characters")
    return value


class SuppressionLists:
    """The API's suppression commands; ``DripDrop`` delegates to one of these."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        publisher: Callable[[], Publisher],
        codecs: Codecs,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self._publisher = publisher
        self.codecs = codecs

    def _send(self, records: Iterable[dict[str, Any]]) -> list[Delivery]:
        codec = self.codecs.for_topic("health-signals")
        topic = self.settings.topic("health-signals")
        publisher = self._publisher()
        for record in records:
            publisher.produce(topic, key=record["tenant_key"], value=codec.encode(record))
        return publisher.flush()

    def add(
        self, entry: str, *, tenant_key: str, reason: str, source: str
    ) -> tuple[dict[str, Any], Delivery]:
        parsed = parse_entry(entry)
        record = signal(
            "suppress", tenant_key, parsed, reason=parse_reason(reason), source=_source(source)
        )
        return record, self._one(record)

    def remove(self, entry: str, *, tenant_key: str) -> tuple[dict[str, Any], Delivery]:
        record = signal("unsuppress", tenant_key, parse_entry(entry))
        return record, self._one(record)

    def _one(self, record: dict[str, Any]) -> Delivery:
        deliveries = self._send([record])
        if not deliveries:
            raise PublishError("no delivery report for the suppression record")
        return deliveries[-1]

    def import_rows(
        self,
        rows: Iterable[tuple[int, str, str | None, str | None]],
        *,
        tenant_key: str,
        reason: str,
        source: str,
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Publish ``(line, entry, reason or None, source or None)`` rows; bad lines are
        reported, not published, and do not stop the import."""
        default_reason, default_source = parse_reason(reason), _source(source)
        result = ImportResult()
        batch: list[dict[str, Any]] = []
        for line, entry, row_reason, row_source in rows:
            try:
                parsed = parse_entry(entry)
                record = signal(
                    "suppress",
                    tenant_key,
                    parsed,
                    reason=parse_reason(row_reason) if row_reason else default_reason,
                    source=_source(row_source) if row_source else default_source,
                )
            except InputError as exc:
                result.invalid.append((line, str(exc)))
                continue
            batch.append(record)
            if len(batch) >= FLUSH_EVERY:
                result.accepted += len(self._send(batch))
                batch = []
                if progress is not None:
                    progress(result.accepted)
        if batch:
            result.accepted += len(self._send(batch))
        if progress is not None:
            progress(result.accepted)
        return result

    def list(
        self, *, tenant_key: str, kind: Literal["address", "domain"] | None = None
    ) -> Iterator[Suppression]:
        """The tenant's entries in the order they were added (streamed, not loaded at once)."""
        query = (
            select(
                suppressions.c.recipient_normalized,
                suppressions.c.reason,
                suppressions.c.source,
                suppressions.c.inserted_at,
            )
            .where(suppressions.c.tenant_key == tenant_key, suppressions.c.channel == "email")
            .order_by(suppressions.c.inserted_at, suppressions.c.recipient_normalized)
        )
        if kind == "domain":
            query = query.where(suppressions.c.recipient_normalized.startswith("@"))
        elif kind == "address":
            query = query.where(~suppressions.c.recipient_normalized.startswith("@"))
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=5_000).execute(query):
                yield Suppression(
                    tenant_key=tenant_key,
                    entry=row.recipient_normalized,
                    kind="domain" if row.recipient_normalized.startswith("@") else "address",
                    reason=row.reason,
                    source=row.source,
                    inserted_at=row.inserted_at,
                )


def as_rows(
    entries: Iterable[str | tuple[int, str, str | None, str | None]],
) -> Iterator[tuple[int, str, str | None, str | None]]:
    """Plain strings become ``(line, entry, None, None)``; rows pass through."""
    for i, item in enumerate(entries, start=1):
        yield (i, item, None, None) if isinstance(item, str) else item


def read_csv(text: Iterable[str]) -> Iterator[tuple[int, str, str | None, str | None]]:
    """``(line, entry, reason, source)`` of a suppression CSV: a header naming ``entry`` (or
    ``email``, ``address``, ``domain``, ``recipient``) and optionally ``reason``, ``source``;
    or no header, with the columns in that order. Blank lines are skipped."""
    reader = csv.reader(text)
    first = next(reader, None)
    if first is None:
        return
    names = [c.strip().lower() for c in first]
    aliases = ("entry", "email", "address", "domain", "recipient")
    column = next((names.index(a) for a in aliases if a in names), None)
    pending: list[list[str]] = []
    reason_at: int | None
    source_at: int | None
    if column is None:  # no header: the first line is an entry
        column, reason_at, source_at = 0, 1, 2
        pending.append(first)
    else:
        reason_at = names.index("reason") if "reason" in names else None
        source_at = names.index("source") if "source" in names else None

    def cell(row: list[str], at: int | None) -> str | None:
        return (row[at].strip() or None) if at is not None and at < len(row) else None

    for line, row in enumerate(itertools.chain(pending, reader), start=1 if pending else 2):
        if any(c.strip() for c in row):
            yield (
                line,
                row[column] if column < len(row) else "",
                cell(row, reason_at),
                cell(row, source_at),
            )


def write_csv(entries: Iterable[Suppression], out: SupportsWrite[str]) -> int:
    """Export in the import format (``entry,reason,source,inserted_at``); returns the count."""
    writer = csv.writer(out)
    writer.writerow([*CSV_COLUMNS, "inserted_at"])
    count = 0
    for s in entries:
        writer.writerow([s.entry, s.reason, s.source or "", s.inserted_at.isoformat()])
        count += 1
    return count
