"""An adapter update reaches a running worker's sender (``streams/sender_stage.py``).

The sender reads adapter rows from PostgreSQL and, before this, kept them for the life of
the process: an operator who moved a mailbox to another SMTP server (or another secret
reference) with ``adapter update`` saw the worker keep sending through the old one until
a restart. Now a row is trusted for ``adapter_refresh_seconds`` (1 s here) and read again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from streams.api import DripDrop
from streams.settings import Settings
from tests.integration.pipeline_support import create_mailbox, start_worker, tenant
from tests.integration.smtp_sink import SmtpSink
from tests.integration.support import WorkerProcess, wait_for


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"partitions": 2, "adapter_refresh_seconds": 1.0})


def test_a_moved_mailbox_sends_through_its_new_server_without_a_restart(
    settings: Settings,
    client: DripDrop,
    smtp: SmtpSink,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    key = tenant()
    mailbox = create_mailbox(client, smtp, tenant_key=key, name="moving")
    sequence = client.create_sequence(tenant_key=key, key="welcome")
    version = client.create_sequence_version(
        sequence.id, tenant_key=key, version=1, mode="lifecycle"
    )
    client.create_step(
        version.id,
        tenant_key=key,
        key="s0",
        position=0,
        subject_template="Hello",
        body_template="Hi",
        adapter_id=mailbox.id,
    )
    worker = start_worker(worker_factory, settings)

    def enroll(n: int) -> None:
        client.enroll(
            tenant_key=key,
            sequence_id=sequence.id,
            subscriber_id=f"u-{n}",
            recipient=f"user{n}@example.org",
            data={},
        )

    def received(sink: SmtpSink, n: int) -> bool:
        assert worker.alive(), worker.log_tail()
        return any(m.rcpt_tos == (f"user{n}@example.org",) for m in sink.messages)

    enroll(1)
    wait_for(lambda: received(smtp, 1), timeout=60, what="the first send, old server")
    with SmtpSink() as new_server:
        client.update_channel_adapter(
            mailbox.id, tenant_key=key, config=new_server.adapter_config()
        )
        # The first send's row is now older than the refresh period.
        time.sleep(settings.adapter_refresh_seconds + 0.5)
        enroll(2)
        wait_for(lambda: received(new_server, 2), timeout=60, what="the send, new server")
        assert not received(smtp, 2)
