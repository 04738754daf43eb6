"""ESP webhook receiver (``streams/webhooks/``): signature checks, event mapping, and the
app on fakes (an in-memory publisher, adapter store and certificate host; no network).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from streams.codecs import Codecs
from streams.kafka import Delivery, PublishError
from streams.settings import Settings
from streams.webhooks import (
    MalformedError,
    UnauthorizedError,
    WebhookAdapter,
    WebhookOptions,
    create_app,
    mailgun_signals,
    postmark_signals,
    ses_signals,
    sns_string_to_sign,
    verify_basic_auth,
    verify_mailgun,
    verify_sns_signature,
)
from tests.webhook_fixtures import TOPIC_ARN, SnsSigner, basic_auth, mailgun_body, ses_bounce

MG_KEY = "key-mailgun-signing-0123456789"
PM_PASSWORD = "postmark-hook-password"
TENANT = "acct_1"
SES_ID = str(uuid.uuid4())
MG_ID = str(uuid.uuid4())
PM_ID = str(uuid.uuid4())


@pytest.fixture(scope="module")
def signer() -> SnsSigner:
    return SnsSigner()


# ---------------------------------------------------------------- SNS signatures


def test_canonical_string_of_a_notification_has_subject_only_when_present() -> None:
    message = {
        "Type": "Notification",
        "MessageId": "m1",
        "TopicArn": "arn",
        "Message": "hello\nworld",
        "Timestamp": "2026-01-01T00:00:00Z",
        "UnsubscribeURL": "https://x",
    }
    assert sns_string_to_sign(message) == (
        b"Message\nhello\nworld\nMessageId\nm1\nTimestamp\n2026-01-01T00:00:00Z\n"
        b"TopicArn\narn\nType\nNotification\n"
    )
    with_subject = sns_string_to_sign({**message, "Subject": "S"})
    assert b"MessageId\nm1\nSubject\nS\nTimestamp\n" in with_subject


def test_canonical_string_of_a_confirmation_has_subscribe_url_and_token() -> None:
    message = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "m1",
        "Token": "tok",
        "TopicArn": "arn",
        "Message": "msg",
        "SubscribeURL": "https://sub",
        "Timestamp": "t",
    }
    assert sns_string_to_sign(message) == (
        b"Message\nmsg\nMessageId\nm1\nSubscribeURL\nhttps://sub\nTimestamp\nt\n"
        b"Token\ntok\nTopicArn\narn\nType\nSubscriptionConfirmation\n"
    )
    with pytest.raises(MalformedError):
        sns_string_to_sign({**message, "Token": None})
    with pytest.raises(MalformedError):
        sns_string_to_sign({**message, "Type": "Other"})


@pytest.mark.parametrize("version", ["1", "2"])
def test_sns_signature_versions_verify_and_any_change_is_refused(
    signer: SnsSigner, version: str
) -> None:
    message = signer.notification(ses_bounce("ses-1", "a@example.org"), version=version)
    verify_sns_signature(message, signer.certificate)
    for field, value in (
        ("Message", message["Message"].replace("Permanent", "Transient")),
        ("TopicArn", "arn:aws:sns:us-east-1:999999999999:other"),
        ("MessageId", "another"),
    ):
        with pytest.raises(UnauthorizedError):
            verify_sns_signature({**message, field: value}, signer.certificate)
    other = "2" if version == "1" else "1"
    with pytest.raises(UnauthorizedError):
        verify_sns_signature({**message, "SignatureVersion": other}, signer.certificate)


def test_sns_signature_of_another_key_bad_base64_or_version_is_refused(signer: SnsSigner) -> None:
    message = signer.notification(ses_bounce("ses-1", "a@example.org"))
    impostor = SnsSigner().notification(ses_bounce("ses-1", "a@example.org"))
    with pytest.raises(UnauthorizedError):
        verify_sns_signature(impostor, signer.certificate)
    for change in ({"Signature": "not base64!"}, {"Signature": ""}, {"SignatureVersion": "3"}):
        with pytest.raises(UnauthorizedError):
            verify_sns_signature({**message, **change}, signer.certificate)


# ---------------------------------------------------------------- Mailgun, Postmark auth


def test_mailgun_signature_timestamp_and_replay() -> None:
    now = time.time()
    body = mailgun_body(MG_KEY, {}, timestamp=int(now))
    token = verify_mailgun(MG_KEY, body["signature"], now=now, max_age_seconds=900)
    assert token == body["signature"]["token"]
    with pytest.raises(UnauthorizedError, match="does not verify"):
        verify_mailgun("other-key", body["signature"], now=now, max_age_seconds=900)
    forged = {**body["signature"], "token": "x" + body["signature"]["token"]}
    with pytest.raises(UnauthorizedError, match="does not verify"):
        verify_mailgun(MG_KEY, forged, now=now, max_age_seconds=900)
    for stamp in (int(now) - 901, int(now) + 901):
        stale = mailgun_body(MG_KEY, {}, timestamp=stamp)["signature"]
        with pytest.raises(UnauthorizedError, match="stale"):
            verify_mailgun(MG_KEY, stale, now=now, max_age_seconds=900)
    with pytest.raises(UnauthorizedError, match="replayed"):
        verify_mailgun(
            MG_KEY, body["signature"], now=now, max_age_seconds=900, seen=lambda t: t == token
        )
    for bad in (None, "sig", {"timestamp": "1", "token": "t"}):
        with pytest.raises(MalformedError):
            verify_mailgun(MG_KEY, bad, now=now, max_age_seconds=900)


def test_basic_auth() -> None:
    verify_basic_auth(basic_auth("hooks", "pw")["Authorization"], "hooks", "pw")
    for header in (
        None,
        "",
        basic_auth("hooks", "wrong")["Authorization"],
        basic_auth("other", "pw")["Authorization"],
        "Bearer abc",
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
    ):
        with pytest.raises(UnauthorizedError):
            verify_basic_auth(header, "hooks", "pw")


# ---------------------------------------------------------------- event mapping


def test_ses_bounce_complaint_delivery_mapping() -> None:
    [hard] = ses_signals(ses_bounce("0100-ses", "a@example.org", feedback_id="fb-1"), "sns-1")
    assert hard["kind"] == "bounce" and hard["bounce_type"] == "hard"
    assert (hard["event_id"], hard["provider_message_id"], hard["recipient"]) == (
        "ses:fb-1",
        "0100-ses",
        "a@example.org",
    )
    assert hard["reason"] == "smtp; 550 5.1.1 user unknown" and hard["source"] == "ses"
    for bounce_type in ("Transient", "Undetermined"):
        [soft] = ses_signals(
            ses_bounce("x", "a@example.org", bounce_type=bounce_type, event_publishing=True), "s"
        )
        assert soft["bounce_type"] == "soft"
    complaint = {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": "a@x.org"}, {"emailAddress": "b@x.org"}],
            "feedbackId": "fb-2",
            "timestamp": "2026-03-03T09:30:15Z",
            "complaintFeedbackType": "abuse",
        },
        "mail": {"messageId": "m-2", "commonHeaders": {"messageId": "<ours@example.com>"}},
    }
    signals = ses_signals(complaint, "sns-2")
    assert [(s["kind"], s["event_id"], s["recipient"]) for s in signals] == [
        ("complaint", "ses:fb-2:a@x.org", "a@x.org"),
        ("complaint", "ses:fb-2:b@x.org", "b@x.org"),
    ]
    assert signals[0]["message_id"] == "ours@example.com"
    delivery = {
        "eventType": "Delivery",
        "delivery": {"timestamp": "2026-03-03T09:30:15Z", "recipients": ["a@x.org"]},
        "mail": {"messageId": "m-3"},
    }
    [delivered] = ses_signals(delivery, "sns-3")
    assert (delivered["kind"], delivered["event_id"]) == ("delivery", "ses:sns-3")
    assert ses_signals({"eventType": "Open", "mail": {"messageId": "m"}}, "s") == []
    with pytest.raises(MalformedError):
        ses_signals({"notificationType": "Bounce", "bounce": {}}, "s")
    with pytest.raises(MalformedError):
        ses_signals({"notificationType": "Bounce", "mail": {"messageId": "m"}}, "s")


def test_mailgun_mapping() -> None:
    base = {
        "id": "evt-1",
        "timestamp": 1772530215.5,
        "recipient": "a@example.org",
        "message": {"headers": {"message-id": "2026.abc@mg.example.com"}},
    }
    [hard] = mailgun_signals(
        {
            **base,
            "event": "failed",
            "severity": "permanent",
            "delivery-status": {"description": "550 no such user"},
        }
    )
    assert (hard["kind"], hard["bounce_type"], hard["event_id"]) == (
        "bounce",
        "hard",
        "mailgun:evt-1",
    )
    assert hard["provider_message_id"] == hard["message_id"] == "2026.abc@mg.example.com"
    assert hard["reason"] == "550 no such user"
    assert hard["occurred_at"].timestamp() == 1772530215.5
    [soft] = mailgun_signals({**base, "event": "failed", "severity": "temporary"})
    assert soft["bounce_type"] == "soft"
    kinds = {e: mailgun_signals({**base, "event": e})[0]["kind"] for e in ("delivered",)}
    kinds |= {e: mailgun_signals({**base, "event": e})[0]["kind"] for e in ("complained",)}
    kinds |= {e: mailgun_signals({**base, "event": e})[0]["kind"] for e in ("unsubscribed",)}
    assert kinds == {
        "delivered": "delivery",
        "complained": "complaint",
        "unsubscribed": "unsubscribe",
    }
    assert mailgun_signals({**base, "event": "opened"}) == []
    with pytest.raises(MalformedError):
        mailgun_signals({"event": "failed", "id": "x", "message": {}})


def test_postmark_mapping() -> None:
    bounce = {
        "RecordType": "Bounce",
        "ID": 4323372036854775807,
        "Type": "HardBounce",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Email": "a@example.org",
        "BouncedAt": "2026-03-03T09:30:15Z",
        "Description": "The server was unable to deliver your message",
        "Details": "smtp;550 5.1.1 user unknown",
    }
    [hard] = postmark_signals(bounce)
    assert (hard["kind"], hard["bounce_type"], hard["event_id"], hard["message_id"]) == (
        "bounce",
        "hard",
        "postmark:4323372036854775807",
        None,
    )
    assert hard["provider_message_id"] == bounce["MessageID"]
    assert postmark_signals({**bounce, "Type": "SoftBounce"})[0]["bounce_type"] == "soft"
    assert postmark_signals({**bounce, "Type": "SpamComplaint"})[0]["kind"] == "complaint"
    assert postmark_signals({**bounce, "Type": "Unsubscribe"})[0]["kind"] == "unsubscribe"
    assert postmark_signals({**bounce, "Type": "AutoResponder"}) == []
    spam = {**bounce, "RecordType": "SpamComplaint", "Type": "SpamComplaint"}
    assert postmark_signals(spam)[0]["kind"] == "complaint"
    delivery = {
        "RecordType": "Delivery",
        "MessageID": "m-1",
        "Recipient": "a@example.org",
        "DeliveredAt": "2026-03-03T09:30:15Z",
    }
    [delivered] = postmark_signals(delivery)
    assert (delivered["kind"], delivered["event_id"]) == (
        "delivery",
        "postmark:delivery:m-1:a@example.org",
    )
    change = {
        "RecordType": "SubscriptionChange",
        "MessageID": "m-1",
        "Recipient": "a@example.org",
        "ChangedAt": "2026-03-03T09:30:15Z",
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
    }
    assert postmark_signals(change)[0]["kind"] == "unsubscribe"
    assert postmark_signals({**change, "SuppressionReason": "HardBounce"}) == []
    assert postmark_signals({**change, "SuppressSending": False}) == []
    assert postmark_signals({"RecordType": "Open", "MessageID": "m"}) == []
    with pytest.raises(MalformedError):
        postmark_signals({**bounce, "MessageID": None})
    with pytest.raises(MalformedError):
        postmark_signals({**bounce, "ID": None})


# ---------------------------------------------------------------- the app on fakes


class ListPublisher:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, bytes]] = []
        self.pending: list[tuple[str, str, bytes]] = []
        self.fail = False

    def produce(self, topic: str, *, key: str, value: bytes, partition: int | None = None) -> None:
        self.pending.append((topic, key, value))

    def flush(self, timeout: float = 30.0) -> list[Delivery]:
        pending, self.pending = self.pending, []
        if self.fail:
            raise PublishError("broker down")
        self.records.extend(pending)
        return [Delivery(t, 0, i) for i, (t, _, _) in enumerate(pending)]

    def close(self) -> None:
        pass


class Harness:
    def __init__(self, signer: SnsSigner) -> None:
        self.settings = Settings(topic_prefix="unit.")
        self.codec = Codecs(self.settings).for_topic("health-signals")
        self.publisher = ListPublisher()
        self.signer = signer
        self.http_gets: list[str] = []
        self.adapters = {
            SES_ID: WebhookAdapter(SES_ID, TENANT, "ses", {"webhook_topic_arn": [TOPIC_ARN]}),
            MG_ID: WebhookAdapter(
                MG_ID, TENANT, "mailgun", {"webhook_secret": {"secret": "env:DD_TEST_MG_KEY"}}
            ),
            PM_ID: WebhookAdapter(
                PM_ID,
                TENANT,
                "postmark",
                {
                    "webhook_username": "hooks",
                    "webhook_secret": {"secret": "env:DD_TEST_PM_PASSWORD"},
                },
            ),
        }

        def handler(request: httpx.Request) -> httpx.Response:
            self.http_gets.append(str(request.url))
            if request.url.path == "/cert.pem":
                return httpx.Response(200, content=signer.pem)
            return httpx.Response(200, text="confirmed")

        async def lookup(tenant_key: str, adapter_id: str) -> WebhookAdapter | None:
            found = self.adapters.get(adapter_id)
            return found if found is not None and found.tenant_key == tenant_key else None

        self.app = create_app(
            self.settings,
            WebhookOptions(max_age_seconds=900),
            publisher=self.publisher,
            adapters=lookup,
            http=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        )

    def records(self) -> list[dict[str, Any]]:
        return [self.codec.decode(v) for _, _, v in self.publisher.records]


@pytest.fixture
def harness(signer: SnsSigner, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("DD_TEST_MG_KEY", MG_KEY)
    monkeypatch.setenv("DD_TEST_PM_PASSWORD", PM_PASSWORD)
    yield Harness(signer)


class AppClient:
    """The app in process over httpx's ASGI transport, on one event loop of its own."""

    def __init__(self, app: Starlette) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://webhooks.test"
        )

    def __enter__(self) -> AppClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()

    def post(
        self, path: str, *, content: bytes | str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return self.loop.run_until_complete(
            self.client.post(path, content=content, headers=headers)
        )


def _post(client: AppClient, path: str, body: Any, **headers: str) -> httpx.Response:
    return client.post(path, content=json.dumps(body), headers=headers)


def test_signed_ses_bounce_is_produced_forgeries_are_401(harness: Harness) -> None:
    path = f"/webhooks/ses/{TENANT}/{SES_ID}"
    good = harness.signer.notification(ses_bounce("0100-ses-id", "a@example.org", feedback_id="f"))
    with AppClient(harness.app) as client:
        forged = {**good, "Message": good["Message"].replace("Permanent", "Transient")}
        impostor = SnsSigner().notification(ses_bounce("0100-ses-id", "a@example.org"))
        other_topic = harness.signer.notification(
            ses_bounce("x", "a@example.org"), topic_arn="arn:aws:sns:us-east-1:9:evil"
        )
        off_host = {**good, "SigningCertURL": "https://evil.example.com/cert.pem"}
        plain_http = {**good, "SigningCertURL": "http://sns.us-east-1.amazonaws.com/cert.pem"}
        for bad in (forged, impostor, other_topic, off_host, plain_http):
            assert _post(client, path, bad).status_code == 401
        assert harness.publisher.records == []
        # Only the allowed host was ever fetched, and only once (cached).
        assert set(harness.http_gets) == {harness.signer.cert_url}
        assert _post(client, path, "not an object").status_code == 400
        assert client.post(path, content=b"{not json").status_code == 400
        assert _post(client, path, {**good, "TopicArn": None}).status_code == 400
        answer = _post(client, path, good)
        assert answer.status_code == 200 and answer.json() == {"produced": 1}
        # A redelivery is a duplicate: not produced again.
        assert _post(client, path, good).json() == {"produced": 0}
    [record] = harness.records()
    assert {k: record[k] for k in ("event_id", "tenant_key", "kind", "bounce_type")} == {
        "event_id": "ses:f",
        "tenant_key": TENANT,
        "kind": "bounce",
        "bounce_type": "hard",
    }
    assert (record["adapter_id"], record["provider_message_id"], record["recipient"]) == (
        SES_ID,
        "0100-ses-id",
        "a@example.org",
    )
    assert harness.publisher.records[0][:2] == ("unit.health-signals", TENANT)
    assert harness.http_gets.count(harness.signer.cert_url) == 1


def test_subscription_confirmed_only_when_signed(harness: Harness) -> None:
    path = f"/webhooks/ses/{TENANT}/{SES_ID}"
    url = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=abc"
    confirmation = harness.signer.confirmation(url)
    with AppClient(harness.app) as client:
        forged = {**confirmation, "SubscribeURL": url + "x"}
        assert _post(client, path, forged).status_code == 401
        elsewhere = harness.signer.confirmation("https://evil.example.com/confirm")
        assert _post(client, path, elsewhere).status_code == 401
        assert url not in harness.http_gets and not any("evil" in u for u in harness.http_gets)
        assert _post(client, path, confirmation).status_code == 200
    assert harness.http_gets.count(url) == 1
    assert harness.publisher.records == []


def test_routing_unknown_provider_adapter_or_tenant_is_404(harness: Harness) -> None:
    body = harness.signer.notification(ses_bounce("m", "a@example.org"))
    with AppClient(harness.app) as client:
        for path in (
            f"/webhooks/sendgrid/{TENANT}/{SES_ID}",
            f"/webhooks/ses/other-tenant/{SES_ID}",
            f"/webhooks/ses/{TENANT}/{uuid.uuid4()}",
            f"/webhooks/ses/{TENANT}/not-a-uuid",
            f"/webhooks/mailgun/{TENANT}/{SES_ID}",
        ):
            assert _post(client, path, body).status_code == 404, path
    assert harness.publisher.records == []


def test_mailgun_signed_stale_replayed(harness: Harness) -> None:
    path = f"/webhooks/mailgun/{TENANT}/{MG_ID}"
    event = {
        "id": "evt-9",
        "event": "failed",
        "severity": "permanent",
        "timestamp": time.time(),
        "recipient": "a@example.org",
        "message": {"headers": {"message-id": "abc@mg.example.com"}},
    }
    body = mailgun_body(MG_KEY, event)
    with AppClient(harness.app) as client:
        assert _post(client, path, mailgun_body("wrong-key", event)).status_code == 401
        stale = mailgun_body(MG_KEY, event, timestamp=int(time.time()) - 3600)
        assert _post(client, path, stale).status_code == 401
        unsigned = {"event-data": event}
        assert _post(client, path, unsigned).status_code == 400
        assert harness.publisher.records == []
        # Kafka down: 503, and the provider's retry of the same request is no replay.
        harness.publisher.fail = True
        assert _post(client, path, body).status_code == 503
        harness.publisher.fail = False
        assert _post(client, path, body).json() == {"produced": 1}
        assert _post(client, path, body).status_code == 401  # the same token again
    [record] = harness.records()
    assert (record["event_id"], record["kind"], record["bounce_type"]) == (
        "mailgun:evt-9",
        "bounce",
        "hard",
    )
    assert record["provider_message_id"] == record["message_id"] == "abc@mg.example.com"


def test_postmark_basic_auth(harness: Harness) -> None:
    path = f"/webhooks/postmark/{TENANT}/{PM_ID}"
    body = {
        "RecordType": "SpamComplaint",
        "Type": "SpamComplaint",
        "ID": 42,
        "MessageID": "pm-1",
        "Email": "a@example.org",
        "BouncedAt": "2026-03-03T09:30:15Z",
    }
    with AppClient(harness.app) as client:
        assert _post(client, path, body).status_code == 401
        assert _post(client, path, body, **basic_auth("hooks", "nope")).status_code == 401
        assert harness.publisher.records == []
        answer = _post(client, path, body, **basic_auth("hooks", PM_PASSWORD))
        assert answer.json() == {"produced": 1}
    [record] = harness.records()
    assert (record["kind"], record["provider_message_id"], record["event_id"]) == (
        "complaint",
        "pm-1",
        "postmark:42",
    )


def test_unresolvable_secret_is_503_and_never_echoed(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DD_TEST_MG_KEY")
    path = f"/webhooks/mailgun/{TENANT}/{MG_ID}"
    with AppClient(harness.app) as client:
        answer = _post(client, path, mailgun_body(MG_KEY, {"event": "opened"}))
    assert answer.status_code == 503 and MG_KEY not in answer.text
