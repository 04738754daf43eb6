"""``explain``'s one line for an enrollment whose next step has not gone out."""

from __future__ import annotations

from streams.db.queries import why_not_sent

ACTIVE = {"state": "active", "reason": None}
UPCOMING = {"key": "s1"}


def _chain(status: str, scheduled_for: str | None = None) -> list[dict[str, object]]:
    return [
        {
            "step_key": "s0",
            "status": status,
            "step_execution_id": "x0",
            "sent_at": None,
            "scheduled_for": scheduled_for,
        }
    ]


def test_a_claimed_send_waits_for_the_sender_with_its_hand_off_time() -> None:
    line = why_not_sent(ACTIVE, _chain("intent", "2031-07-01T09:01:00+00:00"), UPCOMING, None)
    assert line.startswith("step s0 is claimed and waits for the sender for 2031-07-01T09:01")
    assert "open circuit" in line


def test_a_send_with_the_provider_is_being_sent_and_an_ambiguous_one_names_the_fix() -> None:
    assert why_not_sent(ACTIVE, _chain("sending"), UPCOMING, None) == (
        "step s0 is being sent (sending)"
    )
    assert "dripdrop sends resolve x0" in why_not_sent(ACTIVE, _chain("ambiguous"), UPCOMING, None)
