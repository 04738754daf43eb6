"""Topic administration with confluent-kafka: create every topic explicitly, with its config.

The broker runs with ``auto.create.topics.enable=false`` (guides/faust-and-kafka.md §1.3): a
topic auto-created with the wrong partition count or cleanup policy would silently break
co-partitioning or compaction, so topics are created here, before any worker starts.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams import topics
from streams.processor.store import TABLES
from streams.settings import Settings


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap})


def create_topics(
    settings: Settings,
    names: Iterable[str] = topics.ALL,
    *,
    timeout: float = 30.0,
) -> list[str]:
    """Create the prefixed topics that do not exist yet; return the names created."""
    admin = admin_client(settings)
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [settings.topic(n) for n in names if settings.topic(n) not in existing]
    if not wanted:
        return []
    new = [
        NewTopic(
            full,
            num_partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            config={"cleanup.policy": "compact"}
            if full.removeprefix(settings.topic_prefix) in topics.COMPACTED
            else {},
        )
        for full in wanted
    ]
    for _name, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    return wanted


def delete_topics_with_prefix(settings: Settings, *, timeout: float = 30.0) -> list[str]:
    """Delete every topic of a throwaway run: the prefix's and the app's changelogs.

    For tests, benchmarks and the demo, whose ``topic_prefix`` and ``app_id`` are unique
    per run. Faust names changelogs ``{app_id}-{table}-changelog``; leaving them behind
    piles up thousands of partitions on the broker and slows every later run.
    """
    admin = admin_client(settings)
    # The app's own topics by exact name: a prefix match on "{app_id}-" would take every
    # other app whose id starts with this one's (the default id "dripdrop" matched every
    # test worker's changelogs and deleted them under running tests).
    app_topics = {f"{settings.app_id}-{t}-changelog" for t in TABLES}
    app_topics.add(f"{settings.app_id}-__assignor-__leader")
    names = [
        t
        for t in admin.list_topics(timeout=timeout).topics
        if t.startswith(settings.topic_prefix) or t in app_topics
    ]
    if names:
        for future in admin.delete_topics(names, operation_timeout=timeout).values():
            future.result()
    return names
