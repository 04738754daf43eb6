"""No secret ever appears in a topic, a PostgreSQL row, a RocksDB file, a log line or CLI
output (SPEC §7): a canary password, followed through every entry point.

A random canary is the Dovecot password of two mailboxes. One adapter gives it as a
``file:`` reference (the file holds the canary), the other as an ``env:`` reference (the
worker's environment holds it). The references go through ``DripDrop.create_channel_adapter``
/ ``update_channel_adapter`` and the real ``dripdrop adapter create / update / show``
executable; the canary given inline instead is refused by both, with an error that shows
the reference form and not the canary. A worker then sends through both adapters via
Postfix submission (STARTTLS + AUTH, which accepts only the right password), and what
Dovecot stored is read back. Then the canary is searched for, in plain text and in the
base64 forms AUTH PLAIN / LOGIN put on the wire, in every Kafka topic of the test (the
changelogs included, every partition from its first offset), every table of the
``dripdrop`` schema, every file of the worker's data directory (RocksDB), the worker's log
and every CLI output: zero hits. Positive controls show that each place searched holds
what it should (the reference, the sender address), so zero is not an empty search.
"""

from __future__ import annotations

import base64
import email
import json
import os
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql

from dripdrop_core.errors import InputError
from streams.api import DripDrop
from streams.settings import Settings
from tests.integration._api_fixtures import CliResult, run_cli
from tests.integration.mail_fixtures import MailServer
from tests.integration.pipeline_support import rows, start_worker, tenant
from tests.integration.support import WorkerProcess, wait_for

RECIPIENTS = 3
REFERENCE_FORM = '{"secret": "env:NAME"}'


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"partitions": 2})


def _needles(canary: str, usernames: list[str]) -> list[bytes]:
    """The canary as text and as AUTH LOGIN / AUTH PLAIN send it (base64)."""
    plain = canary.encode()
    return [
        plain,
        base64.b64encode(plain),
        *(base64.b64encode(b"\0" + u.encode() + b"\0" + plain) for u in usernames),
    ]


def _hits(data: bytes, needles: list[bytes]) -> int:
    return sum(data.count(n) for n in needles)


def _kafka_records(settings: Settings) -> dict[str, list[bytes]]:
    """Every record (key, value, headers) of every topic of this test, from each partition's
    first offset to its end: the public and internal topics and Faust's changelogs."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    metadata = admin.list_topics(timeout=30)
    names = sorted(
        name
        for name in metadata.topics
        if name.startswith(settings.topic_prefix) or name.startswith(settings.app_id)
    )
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"canary-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
        }
    )
    found: dict[str, list[bytes]] = {name: [] for name in names}
    try:
        ends: dict[tuple[str, int], int] = {}
        assignment: list[TopicPartition] = []
        for name in names:
            for partition in metadata.topics[name].partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(name, partition), timeout=30
                )
                if high > low:
                    ends[(name, partition)] = high
                    assignment.append(TopicPartition(name, partition, low))
        consumer.assign(assignment)

        def read_to_end() -> bool:
            msg = consumer.poll(0.2)
            while msg is not None:
                if msg.error() is None:
                    headers = b"".join(
                        part if isinstance(part, bytes) else str(part).encode()
                        for header in msg.headers() or []
                        for part in header
                    )
                    found[str(msg.topic())].append(
                        (msg.key() or b"") + b"\0" + (msg.value() or b"") + b"\0" + headers
                    )
                msg = consumer.poll(0)
            positions = consumer.position([TopicPartition(t, p) for t, p in ends])
            return all(tp.offset >= ends[(tp.topic, tp.partition)] for tp in positions)

        wait_for(read_to_end, timeout=120, interval=0.0, what="every topic read to its end")
    finally:
        consumer.close()
    return found


def _postgres_hits(settings: Settings, needle: str) -> dict[str, int]:
    """Rows of each table of the ``dripdrop`` schema whose text (or a bytea column) holds
    ``needle``."""
    counts: dict[str, int] = {}
    with psycopg.connect(settings.database_url) as conn:
        tables = [
            str(t)
            for (t,) in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'dripdrop' AND table_type = 'BASE TABLE'"
            ).fetchall()
        ]
        for table in tables:
            byteas = [
                str(c)
                for (c,) in conn.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = 'dripdrop' AND table_name = %s"
                    " AND data_type = 'bytea'",
                    (table,),
                ).fetchall()
            ]
            where = sql.SQL(" OR ").join(
                [
                    sql.SQL("strpos(r::text, %(n)s) > 0"),
                    *(
                        sql.SQL("position(convert_to(%(n)s, 'UTF8') in r.{}) > 0").format(
                            sql.Identifier(c)
                        )
                        for c in byteas
                    ),
                ]
            )
            query = sql.SQL("SELECT count(*) FROM dripdrop.{} AS r WHERE {}").format(
                sql.Identifier(table), where
            )
            row = conn.execute(query, {"n": needle}).fetchone()
            counts[table] = int(row[0]) if row else 0
    return counts


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_a_canary_password_never_leaves_its_file_and_environment(
    settings: Settings,
    client: DripDrop,
    mail_server: MailServer,
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    canary = f"canary-{secrets.token_urlsafe(24)}"
    key = tenant()
    outputs: list[str] = []

    def cli(*args: str) -> CliResult:
        result = run_cli(settings, *args)
        outputs.extend((result.stdout, result.stderr))
        return result

    def cli_json(*args: str) -> dict[str, Any]:
        result = cli(*args, "--json")
        assert result.exit_code == 0, result.stderr
        data = json.loads(result.stdout)
        assert isinstance(data, dict)
        return data

    # Two mailboxes whose password is the canary; the recipients have their own.
    file_sender = mail_server.new_address("canaryfile")
    mail_server.add_user(file_sender, canary)
    env_sender = mail_server.new_address("canaryenv")
    mail_server.add_user(env_sender, canary)
    recipients = [mail_server.new_address(f"reader{i}") for i in range(RECIPIENTS)]
    for address in recipients:
        mail_server.add_user(address)
    password_file = tmp_path / "secrets" / "mailbox.password"
    password_file.parent.mkdir()
    password_file.write_text(canary + "\n")
    os.chmod(password_file, 0o600)
    env_name = f"CANARY_SMTP_PASSWORD_{secrets.token_hex(4).upper()}"
    file_ref = {"secret": f"file:{password_file}"}
    env_ref = {"secret": f"env:{env_name}"}

    def smtp(username: str, password: object, **extra: object) -> dict[str, Any]:
        return {
            "host": "localhost",
            "port": mail_server.submission_port,
            "start_tls": True,
            "tls_ca_file": str(mail_server.ca_file),
            "username": username,
            "password": password,
            **extra,
        }

    # The canary inline: refused by the API (create and update), nothing stored.
    inline_configs = [
        smtp(file_sender, canary),
        {"host": "localhost", "username": file_sender, "oauth2": {"refresh_token": canary}},
        {"host": "localhost", "dkim": {"selector": "s1", "private_key": canary}},
    ]
    for config in inline_configs:
        with pytest.raises(InputError) as refused:
            client.create_channel_adapter(
                tenant_key=key, name="inline", provider="smtp", config=config
            )
        assert refused.value.code == "invalid_config"
        assert REFERENCE_FORM in str(refused.value) and canary not in str(refused.value)

    # The reference through the API.
    by_file = client.create_channel_adapter(
        tenant_key=key,
        name="by-file",
        provider="smtp",
        from_address=file_sender,
        health_state="active",
        config=smtp(file_sender, file_ref),
    )
    by_file = client.update_channel_adapter(
        by_file.id, tenant_key=key, config=smtp(file_sender, file_ref, pool_size=2)
    )
    assert by_file.config["password"] == file_ref
    with pytest.raises(InputError) as refused:
        client.update_channel_adapter(by_file.id, tenant_key=key, config=smtp(file_sender, canary))
    assert REFERENCE_FORM in str(refused.value) and canary not in str(refused.value)
    assert client.get_adapter(by_file.id, tenant_key=key).config["password"] == file_ref

    # The reference through the CLI (a real subprocess), and the canary inline refused.
    inline = cli(
        "adapter", "create", "--tenant", key, "--name", "inline-cli",
        "--config", json.dumps(smtp(env_sender, canary)),
    )  # fmt: skip
    assert inline.exit_code != 0
    assert "error [invalid_config]" in inline.stderr and REFERENCE_FORM in inline.stderr
    created = cli_json(
        "adapter", "create", "--tenant", key, "--name", "by-env", "--provider", "smtp",
        "--from-address", env_sender, "--health-state", "active",
        "--config", json.dumps(smtp(env_sender, env_ref)),
    )  # fmt: skip
    env_id = str(created["id"])
    assert created["config"]["password"] == env_ref
    updated = cli_json(
        "adapter", "update", env_id, "--tenant", key,
        "--config", json.dumps(smtp(env_sender, env_ref, pool_size=2)),
    )  # fmt: skip
    assert updated["config"] == smtp(env_sender, env_ref, pool_size=2)
    inline = cli(
        "adapter", "update", env_id, "--tenant", key,
        "--config", json.dumps(smtp(env_sender, canary)),
    )  # fmt: skip
    assert inline.exit_code != 0 and REFERENCE_FORM in inline.stderr
    text_update = cli("adapter", "update", by_file.id, "--tenant", key, "--min-gap-seconds", "0")
    assert text_update.exit_code == 0, text_update.stderr
    for adapter_id, ref in ((by_file.id, file_ref), (env_id, env_ref)):
        shown = cli("adapter", "show", adapter_id, "--tenant", key)
        assert shown.exit_code == 0, shown.stderr
        assert json.dumps(ref, sort_keys=True) in shown.stdout  # the config line
        assert cli_json("adapter", "show", adapter_id, "--tenant", key)["config"]["password"] == ref
    names = rows(settings, "SELECT name FROM dripdrop.channel_adapters WHERE tenant_key = %s", key)
    assert sorted(n for (n,) in names) == ["by-env", "by-file"]  # nothing inline was stored

    # Sends through both: Postfix takes AUTH only with the canary, resolved by the sender.
    sequence = client.create_sequence(tenant_key=key, key="welcome")
    version = client.create_sequence_version(
        sequence.id, tenant_key=key, version=1, mode="lifecycle"
    )
    for position, adapter_id in enumerate((by_file.id, env_id)):
        client.create_step(
            version.id,
            tenant_key=key,
            key=f"s{position}",
            position=position,
            subject_template=f"Step {position}",
            body_template="Hello {{ first_name }}",
            adapter_id=adapter_id,
        )
    worker = start_worker(lambda s: worker_factory(s, env={env_name: canary}), settings)
    for i, address in enumerate(recipients):
        client.enroll(
            tenant_key=key,
            sequence_id=sequence.id,
            subscriber_id=f"u-{i}",
            recipient=address,
            data={"first_name": f"R{i}"},
        )

    def all_sent() -> list[tuple[Any, ...]] | None:
        assert worker.alive(), worker.log_tail()
        found = rows(
            settings,
            "SELECT adapter_id::text, status FROM dripdrop.step_executions WHERE tenant_key = %s",
            key,
        )
        return found if len([r for r in found if r[1] == "sent"]) == 2 * RECIPIENTS else None

    sent = wait_for(all_sent, timeout=120, what="both steps to every recipient")
    assert sorted(a for a, _ in sent) == sorted([by_file.id, env_id] * RECIPIENTS)
    for address in recipients:
        received = [email.message_from_bytes(m) for m in mail_server.wait_for(address, 2)]
        assert sorted(str(m["From"]) for m in received) == sorted([file_sender, env_sender])
    for adapter_id in (by_file.id, env_id):  # after the sends: recent events shown too
        assert cli("adapter", "show", adapter_id, "--tenant", key).exit_code == 0
    assert worker.stop() == 0

    # The search.
    needles = _needles(canary, [file_sender, env_sender])
    control = f"file:{password_file}".encode()

    topics = _kafka_records(settings)
    topic_hits = {t: sum(_hits(r, needles) for r in records) for t, records in topics.items()}
    assert any(t.endswith("-changelog") for t in topics), sorted(topics)
    assert sum(len(r) for r in topics.values()) > 0
    assert any(control in r for r in topics[settings.topic("config")])  # the reference travels

    pg_hits = {
        table: count
        for needle in needles
        for table, count in _postgres_hits(settings, needle.decode()).items()
        if count
    }
    assert _postgres_hits(settings, control.decode())["channel_adapters"] >= 1

    data_files = _files(Path(settings.data_dir))
    assert data_files, settings.data_dir
    file_hits = {name: _hits(data, needles) for name, data in data_files.items()}
    assert any(env_name.encode() in data for data in data_files.values())  # RocksDB is read

    log = worker.log_path.read_bytes()
    assert b"[^Worker]: Ready" in log
    cli_hits = _hits("".join(outputs).encode(), needles)

    print(
        f"canary search: {len(topics)} topics ({sum(len(r) for r in topics.values())} records),"
        f" {len(_postgres_hits(settings, 'x'))} tables, {len(data_files)} data files,"
        f" log {len(log)} bytes, {len(outputs) // 2} CLI runs;"
        f" hits: topics {sum(topic_hits.values())}, postgres {sum(pg_hits.values())},"
        f" data dir {sum(file_hits.values())}, log {_hits(log, needles)}, cli {cli_hits}"
    )
    assert {t: n for t, n in topic_hits.items() if n} == {}
    assert pg_hits == {}
    assert {f: n for f, n in file_hits.items() if n} == {}
    assert _hits(log, needles) == 0
    assert cli_hits == 0
