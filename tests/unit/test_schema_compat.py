"""BACKWARD compatibility: the current schemas read data written with every released one.

Released schemas are frozen in ``schema_snapshots/<release>/<topic>.avsc``. A release that
changes a schema adds a new snapshot directory; old ones are never edited.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from streams.codecs import SCHEMA_DIR
from streams.settings import TOPIC_NAMES

SNAPSHOT_DIR = Path(__file__).resolve().parent / "schema_snapshots"
SNAPSHOTS = sorted(SNAPSHOT_DIR.glob("*/*.avsc"))


def _example(schema: Any, variant: int) -> Any:
    """A value of ``schema``; ``variant`` walks enum symbols and union branches."""
    if isinstance(schema, list):
        return _example(schema[variant % len(schema)], variant)
    if isinstance(schema, str):
        return {
            "null": None,
            "boolean": variant % 2 == 0,
            "int": variant,
            "long": 1_700_000_000_000 + variant,
            "float": 0.5,
            "double": 0.25,
            "bytes": b"\x00\x01",
            "string": f"s{variant}",
        }[schema]
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: _example(f["type"], variant) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][variant % len(schema["symbols"])]
    if kind == "array":
        return [_example(schema["items"], variant)] * (variant % 3)
    if kind == "map":
        return {f"k{i}": _example(schema["values"], variant) for i in range(variant % 3)}
    return _example(kind, variant)  # a primitive with a logicalType


def _variants(schema: Any) -> int:
    """Enough variants to visit every enum symbol and union branch at least once."""
    text = json.dumps(schema)
    widest = [len(s.get("symbols", [])) for s in _walk(schema)] + [2]
    return max(widest) + (3 if '"map"' in text or '"array"' in text else 0)


def _walk(schema: Any) -> list[dict[str, Any]]:
    if isinstance(schema, list):
        return [n for s in schema for n in _walk(s)]
    if not isinstance(schema, dict):
        return []
    nodes = [schema]
    for f in schema.get("fields", []):
        nodes += _walk(f["type"])
    for key in ("items", "values"):
        nodes += _walk(schema.get(key))
    return nodes


def assert_backward_compatible(reader: dict[str, Any], writer: dict[str, Any]) -> None:
    """Raise unless data written with ``writer`` can be read with ``reader``.

    Raises:
        SchemaResolutionError: a field without default, a removed enum symbol, a type change…
        AssertionError: a field present in the old data came back different.
    """
    parsed_writer = parse_schema(copy.deepcopy(writer), named_schemas={})
    parsed_reader = parse_schema(copy.deepcopy(reader), named_schemas={})
    shared = {f["name"] for f in reader["fields"]} & {f["name"] for f in writer["fields"]}
    for variant in range(_variants(writer)):
        record = _example(writer, variant)
        buffer = io.BytesIO()
        schemaless_writer(buffer, parsed_writer, record)
        buffer.seek(0)
        decoded = schemaless_reader(buffer, parsed_writer, parsed_reader)
        assert isinstance(decoded, dict)
        for name in shared:
            if isinstance(record[name], int) and not isinstance(decoded[name], int):
                continue  # a timestamp-millis long comes back as a datetime
            assert decoded[name] == record[name], name


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def test_every_topic_has_a_schema_and_a_snapshot() -> None:
    assert {p.stem for p in SCHEMA_DIR.glob("*.avsc")} == set(TOPIC_NAMES)
    assert {p.stem for p in SNAPSHOT_DIR.glob("v1/*.avsc")} == set(TOPIC_NAMES)


@pytest.mark.parametrize("snapshot", SNAPSHOTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_current_schema_reads_released_snapshot(snapshot: Path) -> None:
    current = _load(SCHEMA_DIR / snapshot.name)
    assert_backward_compatible(current, _load(snapshot))


@pytest.mark.parametrize("snapshot", SNAPSHOTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fields_added_since_snapshot_have_defaults(snapshot: Path) -> None:
    old = {f["name"] for f in _load(snapshot)["fields"]}
    added = [f for f in _load(SCHEMA_DIR / snapshot.name)["fields"] if f["name"] not in old]
    assert [f["name"] for f in added if "default" not in f] == []


@pytest.mark.parametrize("topic", TOPIC_NAMES)
def test_schema_names_follow_conventions(topic: str) -> None:
    schema = _load(SCHEMA_DIR / f"{topic}.avsc")
    assert schema["namespace"] == "dripdrop.v1"
    assert schema["name"][0].isupper() and "_" not in schema["name"]
    for f in schema["fields"]:
        if isinstance(f["type"], list) and "null" in f["type"]:
            assert f["type"][0] == "null" and f.get("default", "missing") is None, f["name"]


def _current(topic: str) -> dict[str, Any]:
    return _load(SCHEMA_DIR / f"{topic}.avsc")


def test_compat_check_fails_for_field_added_without_default() -> None:
    old = _current("enrollments")
    new = copy.deepcopy(old)
    new["fields"].append({"name": "priority", "type": "int"})
    with pytest.raises(SchemaResolutionError):
        assert_backward_compatible(new, old)


def test_compat_check_fails_for_removed_enum_symbol() -> None:
    old = _current("dispatch-results")
    new = copy.deepcopy(old)
    status = next(f for f in new["fields"] if f["name"] == "status")
    status["type"]["symbols"].remove("ambiguous")
    with pytest.raises(SchemaResolutionError):
        assert_backward_compatible(new, old)


def test_compat_check_fails_for_changed_field_type() -> None:
    old = _current("dead-letter")
    new = copy.deepcopy(old)
    next(f for f in new["fields"] if f["name"] == "partition")["type"] = "string"
    with pytest.raises(SchemaResolutionError):
        assert_backward_compatible(new, old)


def test_compat_check_accepts_field_added_with_default_and_field_removed() -> None:
    old = _current("telemetry")
    new = copy.deepcopy(old)
    new["fields"] = [f for f in new["fields"] if f["name"] != "attributes"]
    new["fields"].append({"name": "severity", "type": "string", "default": "info"})
    assert_backward_compatible(new, old)
