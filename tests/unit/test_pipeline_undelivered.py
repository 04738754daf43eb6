"""``streams.pipeline.undelivered``: the check behind ``Pipeline._check_delivered`` (issue 11,
faust-streaming #596), which stops a worker whose consumer handed over records the processor
never got. Pure function of the consumer's read offsets, the processed and committed offsets."""

from __future__ import annotations

from streams.pipeline import undelivered

P = "t."


def test_nothing_ahead_is_nothing() -> None:
    reads = [(f"{P}enrollments", 0, 41), (f"{P}health-signals", 1, 7)]
    processed = {(f"{P}enrollments", 0): 41, (f"{P}health-signals", 1): 9}
    assert undelivered(reads, processed, {}, P) is None


def test_a_read_offset_ahead_of_the_last_processed_is_found() -> None:
    reads = [(f"{P}enrollments", 0, 41), (f"{P}health-signals", 1, 1550)]
    processed = {(f"{P}enrollments", 0): 41, (f"{P}health-signals", 1): 1183}
    assert undelivered(reads, processed, {}, P) == (f"{P}health-signals", 1, 1550, 1183)


def test_nothing_processed_since_the_rebalance_compares_with_the_committed_offset() -> None:
    reads = [(f"{P}inbound-messages", 2, 12)]
    assert undelivered(reads, {}, {(f"{P}inbound-messages", 2): 12}, P) is None
    assert undelivered(reads, {}, {(f"{P}inbound-messages", 2): 10}, P) == (
        f"{P}inbound-messages", 2, 12, 10,
    )  # fmt: skip
    assert undelivered(reads, {}, {}, P) is None  # no baseline at all: nothing to say


def test_ticks_compacted_unknown_and_unread_partitions_are_not_checked() -> None:
    reads = [
        (f"{P}ticks", 0, 900),
        (f"{P}config", 0, 900),
        (f"{P}dispatch", 0, 900),  # not a processor input
        ("other.enrollments", 0, 900),  # another prefix
        (f"{P}enrollments", 3, None),  # not read yet
    ]
    processed = {(t, p): 1 for t, p, _ in reads}
    assert undelivered(reads, processed, {}, P) is None
