"""Signed ESP webhook requests for the tests of ``streams/webhooks/``.

``SnsSigner`` plays Amazon SNS: its own RSA key and self-signed certificate, and messages
signed the way "Verifying the signatures of Amazon SNS messages" describes (SignatureVersion
1 = SHA1withRSA, 2 = SHA256withRSA over the canonical string). ``CertServer`` serves that
certificate (and a SubscribeURL) over local HTTP. Mailgun and Postmark bodies and headers
are built as those providers document them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from streams.webhooks import sns_string_to_sign

TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:ses-events"


class SnsSigner:
    """An SNS stand-in: a key, its self-signed certificate, and signed messages."""

    def __init__(self, cert_url: str = "https://sns.us-east-1.amazonaws.com/cert.pem") -> None:
        self.cert_url = cert_url
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.certificate.public_bytes(serialization.Encoding.PEM)

    def sign(self, message: dict[str, Any], version: str = "2") -> dict[str, Any]:
        """``message`` with SignatureVersion, SigningCertURL and a valid Signature."""
        signed = {**message, "SignatureVersion": version, "SigningCertURL": self.cert_url}
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        raw = self.key.sign(sns_string_to_sign(signed), padding.PKCS1v15(), algorithm)
        signed["Signature"] = base64.b64encode(raw).decode()
        return signed

    def notification(
        self,
        payload: dict[str, Any],
        *,
        topic_arn: str = TOPIC_ARN,
        version: str = "2",
        subject: str | None = None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": topic_arn,
            "Message": json.dumps(payload),
            "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        }
        if subject is not None:
            message["Subject"] = subject
        return self.sign(message, version)

    def confirmation(self, subscribe_url: str, *, topic_arn: str = TOPIC_ARN) -> dict[str, Any]:
        return self.sign(
            {
                "Type": "SubscriptionConfirmation",
                "MessageId": str(uuid.uuid4()),
                "Token": "2336412f37fb687f5d51e6e2425c464de12884",
                "TopicArn": topic_arn,
                "Message": f"You have chosen to subscribe to the topic {topic_arn}.",
                "SubscribeURL": subscribe_url,
                "Timestamp": "2026-01-01T00:00:00.000Z",
            }
        )


def ses_bounce(
    message_id: str,
    recipient: str,
    *,
    bounce_type: str = "Permanent",
    feedback_id: str | None = None,
    event_publishing: bool = False,
) -> dict[str, Any]:
    """An SES bounce notification (identity notification or configuration-set event)."""
    kind = {"eventType": "Bounce"} if event_publishing else {"notificationType": "Bounce"}
    return {
        **kind,
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": recipient,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": "2026-03-03T09:30:15.123Z",
            "feedbackId": feedback_id or f"0100{uuid.uuid4().hex}-000000",
        },
        "mail": {
            "timestamp": "2026-03-03T09:30:14.000Z",
            "messageId": message_id,
            "source": "jane@example.com",
            "destination": [recipient],
        },
    }


def mailgun_body(
    key: str,
    event_data: dict[str, Any],
    *,
    timestamp: int | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """A Mailgun webhook body: ``signature`` = HMAC-SHA256(key, timestamp + token)."""
    stamp = str(timestamp if timestamp is not None else int(datetime.now(UTC).timestamp()))
    tok = token or uuid.uuid4().hex
    digest = hmac.new(key.encode(), (stamp + tok).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": stamp, "token": tok, "signature": digest},
        "event-data": event_data,
    }


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class CertServer:
    """Local HTTP: ``/cert.pem`` serves a certificate, ``/confirm`` records confirmations."""

    def __init__(self, pem: bytes) -> None:
        self.pem = pem
        self.cert_gets = 0
        self.confirmations: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path == "/cert.pem":
                    owner.cert_gets += 1
                    body = owner.pem
                elif self.path.startswith("/confirm"):
                    owner.confirmations.append(self.path)
                    body = b"<ConfirmSubscriptionResponse/>"
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
