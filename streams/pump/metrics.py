"""Prometheus metrics of the pump, per mailbox (``adapter_id``, ``folder``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

_MAILBOX = ("adapter_id", "folder")


class PumpMetrics:
    """One registry per pump process (served by ``prometheus_client.start_http_server``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "dripdrop_pump_messages",
            "Messages produced onto inbound-messages and acknowledged by Kafka.",
            [*_MAILBOX, "intent"],
            registry=r,
        )
        self.skipped = Counter(
            "dripdrop_pump_skipped",
            "Messages not produced again: already produced (UIDVALIDITY resync).",
            _MAILBOX,
            registry=r,
        )
        self.rejected = Counter(
            "dripdrop_pump_rejected",
            "Messages that could not be encoded as a record (logged with their UID, skipped).",
            _MAILBOX,
            registry=r,
        )
        self.reconnects = Counter(
            "dripdrop_pump_reconnects",
            "Sessions that ended and were retried.",
            _MAILBOX,
            registry=r,
        )
        self.connected = Gauge(
            "dripdrop_pump_connected", "1 while a session is up.", _MAILBOX, registry=r
        )
        self.lag = Gauge(
            "dripdrop_pump_lag_seconds",
            "Last message: from its arrival in the mailbox (INTERNALDATE) to Kafka's ack.",
            _MAILBOX,
            registry=r,
        )
        self.backlog = Gauge(
            "dripdrop_pump_backlog_messages",
            "Messages above the cursor not yet produced.",
            _MAILBOX,
            registry=r,
        )
        self.last_success = Gauge(
            "dripdrop_pump_last_success_timestamp_seconds",
            "When the mailbox was last read to its end (Unix time).",
            _MAILBOX,
            registry=r,
        )
        self.pushes = Counter(
            "dripdrop_pump_pushes",
            "Push notifications accepted (Gmail Pub/Sub, Graph change notifications).",
            ["kind"],
            registry=r,
        )
        self.push_refused = Counter(
            "dripdrop_pump_push_refused",
            "Push requests refused: wrong token, OIDC or clientState.",
            ["kind"],
            registry=r,
        )
        self.mailboxes = Gauge(
            "dripdrop_pump_mailboxes", "Folders this pump is reading.", registry=r
        )
