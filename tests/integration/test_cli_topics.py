"""``dripdrop topics create``: every topic, co-partitioned, config compacted, idempotent."""

from __future__ import annotations

import json
import subprocess
import sys

from confluent_kafka.admin import ConfigResource

from streams.admin import admin_client
from streams.settings import TOPIC_NAMES, Settings
from streams.topics import INTERNAL as INTERNAL_TOPICS
from tests.integration.support import settings_env


def test_topics_create_makes_every_topic_copartitioned_and_is_idempotent(
    settings: Settings,
) -> None:
    command = [sys.executable, "-m", "streams.cli.main", "topics", "create", "--json"]
    first = subprocess.run(command, env=settings_env(settings), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    wanted = {settings.topic(n) for n in (*TOPIC_NAMES, *INTERNAL_TOPICS)}
    assert set(json.loads(first.stdout)["created"]) == wanted
    admin = admin_client(settings)
    metadata = admin.list_topics(timeout=10).topics
    assert {len(metadata[t].partitions) for t in wanted} == {settings.partitions}
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topic("config"))
    configs = admin.describe_configs([resource])[resource].result()
    assert configs["cleanup.policy"].value == "compact"
    again = subprocess.run(command, env=settings_env(settings), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["created"] == []
