"""Rules and return-date parsing of ``dripdrop_core.classify`` beyond the corpus."""

from __future__ import annotations

from datetime import date

import pytest

from dripdrop_core.classify import (
    RULES,
    classify_fields,
    classify_mime,
    parse_mail,
    parse_return_date,
    view_from_mime,
)
from dripdrop_core.correlation import Intent

RECEIVED = date(2026, 3, 2)  # a Monday


@pytest.mark.parametrize(
    ("text", "back"),
    [
        ("I will be back on 2026-03-09.", date(2026, 3, 9)),
        ("Back on the 9th of March", date(2026, 3, 9)),
        ("out until March 6th", date(2026, 3, 7)),
        ("zurück am 10.3.", date(2026, 3, 10)),
        ("de retour le 1er avril", date(2026, 4, 1)),
        ("regreso el 5/4", date(2026, 4, 5)),  # 5 April (day first) is nearer than 4 May
        ("back on 3/10", date(2026, 3, 10)),  # month first: 10 March is nearer than 3 October
        ("back on Friday", date(2026, 3, 6)),
        ("back on Monday", date(2026, 3, 9)),  # a weekday is the next one, never today
        ("back 10 Jan", date(2027, 1, 10)),  # no year and long past: next year's
        ("back on 01.03.26", date(2026, 3, 2)),  # yesterday: never before the message
        ("away 2 to 6 March", date(2026, 3, 7)),  # no cue: the last date is the last day away
        ("back on 30 February", None),
        ("back on 2029-01-01", None),  # over a year ahead: a signature, not a return
        ("no dates here", None),
    ],
)
def test_parse_return_date_cases(text: str, back: date | None) -> None:
    assert parse_return_date(text, RECEIVED) == back


def test_parse_return_date_29_february_next_year_missing_ignored() -> None:
    assert parse_return_date("back 29 February", date(2028, 3, 30)) is None


def _mime(headers: str, body: str = "Hello.") -> bytes:
    return (headers.strip() + "\nMIME-Version: 1.0\n\n" + body).replace("\n", "\r\n").encode()


def test_rules_table_order_standards_first() -> None:
    assert [name for name, _ in RULES][:3] == ["rfc3464", "rfc5965", "bounce_heuristic"]


def test_auto_submitted_no_is_a_reply() -> None:
    raw = _mime("From: a@x\nSubject: Re: hi\nAuto-Submitted: no\nMessage-ID: <m@x>")
    assert classify_mime(raw, received=RECEIVED).intent is Intent.REPLY


@pytest.mark.parametrize(
    "header",
    ["X-Autorespond: 1", "Precedence: junk", "X-MS-Exchange-Generated-Message-Source: Rules"],
)
def test_vendor_headers_auto_reply(header: str) -> None:
    raw = _mime(f"From: a@x\nSubject: Re: hi\n{header}")
    found = classify_mime(raw, received=RECEIVED)
    assert found.intent is Intent.AUTO_REPLY


def test_reply_with_bounce_subject_from_a_person_is_a_reply() -> None:
    raw = _mime("From: bob@x\nSubject: Re: undeliverable mail?", "Got 550 from you")
    assert classify_mime(raw, received=RECEIVED).intent is Intent.REPLY


def test_bounce_subject_without_any_status_is_a_reply() -> None:
    raw = _mime("From: bob@x\nSubject: Returned mail", "what is this?")
    assert classify_mime(raw, received=RECEIVED).intent is Intent.REPLY


def test_mailer_daemon_without_status_hard_unless_temporary() -> None:
    hard = _mime("From: MAILER-DAEMON@x\nSubject: oops", "could not deliver")
    soft = _mime("From: MAILER-DAEMON@x\nSubject: oops", "temporary problem, will retry")
    assert classify_mime(hard, received=RECEIVED).data["bounce_type"] == "hard"
    assert classify_mime(soft, received=RECEIVED).data["bounce_type"] == "soft"


def test_mailer_daemon_smtp_5xx_with_temporary_wording_is_soft() -> None:
    raw = _mime("From: postmaster@x\nSubject: Undeliverable", "550 mailbox full, try again later")
    assert classify_mime(raw, received=RECEIVED).data["bounce_type"] == "soft"


def test_mailer_daemon_success_status_not_a_bounce() -> None:
    raw = _mime("From: postmaster@x\nSubject: Delivery report", "Status 2.0.0 delivered")
    assert classify_mime(raw, received=RECEIVED).intent is not Intent.BOUNCE


def test_fields_report_content_type_classified() -> None:
    headers = {"Content-Type": 'multipart/report; report-type="delivery-status"'}
    text = "Final-Recipient: rfc822; x@y\nStatus: 4.2.2\n\nMessage-ID: <orig@us>"
    found = classify_fields(headers, "Delayed", text, received=RECEIVED)
    assert found.intent is Intent.BOUNCE
    assert found.data == {
        "rule": "rfc3464",
        "bounce_type": "soft",
        "status": "4.2.2",
        "recipient": "x@y",
        "original_message_id": "orig@us",
    }
    arf = {"content-type": "multipart/report; report-type=feedback-report"}
    assert classify_fields(arf, "FBL", "abuse", received=RECEIVED).intent is Intent.COMPLAINT
    html = classify_fields({}, "Hi", None, "<p>Sounds <b>good</b></p>", received=RECEIVED)
    assert html.intent is Intent.REPLY


def test_report_without_attached_message_reads_id_from_text() -> None:
    raw = _mime(
        "From: mailer-daemon@x\nSubject: fail\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"',
        "--b\nContent-Type: text/plain\n\nYour message\nMessage-ID: <orig@us>\n"
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\n"
        "Final-Recipient: rfc822; r@y\nAction: failed\nStatus: 5.7.1\n--b--\n",
    )
    found = classify_mime(raw, received=RECEIVED)
    assert found.data["original_message_id"] == "orig@us"
    assert found.data["bounce_type"] == "hard"


def test_broken_charset_and_message_still_parsed() -> None:
    raw = _mime("From: a@x\nSubject: hi\nContent-Type: text/plain; charset=x-unknown-9", "hé")
    assert "h" in view_from_mime(raw).body_text
    mail = parse_mail(_mime("From: a@x\nDate: not a date\nMessage-ID: <a@b>"))
    assert mail.date is None and mail.message_id == "a@b" and mail.body_text == "Hello."
    naive = parse_mail(_mime("From: a@x\nDate: Mon, 2 Mar 2026 10:00:00 -0000"))
    assert naive.date is None  # "-0000": no zone known, not guessed


def test_parse_mail_fields_normalized() -> None:
    raw = _mime(
        "From: Ada <ada@example.com>\nTo: Sales <sales@x>, b@x\nSubject: Re: hi\n"
        "Message-ID:  <r1@ada>\nIn-Reply-To: <s2@x> (sent)\nReferences: <s1@x>\n <s2@x>\n"
        "Date: Mon, 2 Mar 2026 10:00:00 +0100\n"
        'Content-Type: multipart/alternative; boundary="b"',
        "--b\nContent-Type: text/plain\n\nYes\n--b\nContent-Type: text/html\n\n<p>Yes</p>\n--b--\n",
    )
    mail = parse_mail(raw)
    assert (mail.message_id, mail.in_reply_to, mail.references) == (
        "r1@ada",
        "s2@x",
        ("s1@x", "s2@x"),
    )
    assert (mail.from_, mail.to, mail.subject) == ("ada@example.com", "sales@x", "Re: hi")
    assert (mail.body_text or "").strip() == "Yes"
    assert (mail.body_html or "").strip() == "<p>Yes</p>"
    assert mail.headers["message-id"] == "<r1@ada>"
    assert mail.date is not None and mail.date.utcoffset() is not None


def test_correlation_tries_the_reported_message_first() -> None:
    from dripdrop_core.correlation import IdCandidate, correlation_candidates

    found = correlation_candidates("<r@x>", None, original_message_id=" <ours@us> ")
    assert found[:2] == (
        IdCandidate(kind="rfc", message_id="ours@us"),
        IdCandidate(kind="rfc", message_id="r@x"),
    )


def test_soft_bounce_changes_nothing_hard_or_unknown_stops() -> None:
    from datetime import UTC, datetime

    from dripdrop_core.correlation import intent_effect

    now = datetime(2026, 3, 2, tzinfo=UTC)
    soft = intent_effect(Intent.BOUNCE, bounce_type="soft", now=now)
    assert (soft.suppress, soft.cancel_pending, soft.health_signal) == (False, False, None)
    for kind in ("hard", None):
        hard = intent_effect(Intent.BOUNCE, bounce_type=kind, now=now)
        assert (hard.suppress, hard.cancel_pending, hard.health_signal) == (True, True, "bounce")
