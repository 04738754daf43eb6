"""The real mail servers of ``services.py up``: every port delivers into Dovecot, TLS verified.

Plain SMTP on the MX port, STARTTLS + AUTH on submission, implicit TLS + AUTH, XOAUTH2 with a
token from the local OAuth2 server's refresh-token grant; unknown users get an RFC 3464 report.
"""

from __future__ import annotations

import base64
import email
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid

import httpx
import pytest

from tests.integration.mail_fixtures import MailServer


def _message(sender: str, to: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="dripdrop.test")
    msg.set_content(f"body of {subject}")
    return msg


def _received(mail_server: MailServer, address: str, message_id: str) -> email.message.Message:
    for raw in mail_server.wait_for(address):
        parsed = email.message_from_bytes(raw)
        if parsed["Message-ID"] == message_id:
            return parsed
    raise AssertionError(f"{message_id} not delivered to {address}")


def test_mx_port_delivers_into_dovecot(mail_server: MailServer) -> None:
    to = mail_server.new_address("mx")
    mail_server.add_user(to)
    msg = _message("someone@example.test", to, "plain mx")
    mail_server.deliver(msg.as_bytes(), to)
    got = _received(mail_server, to, msg["Message-ID"])
    assert got["Subject"] == "plain mx"
    assert "body of plain mx" in got.get_payload(decode=True).decode()  # type: ignore[union-attr]


def test_submission_starttls_auth(mail_server: MailServer) -> None:
    sender, to = mail_server.new_address("sub"), mail_server.new_address("rcpt")
    password = mail_server.add_user(sender).read_text().strip()
    mail_server.add_user(to)
    msg = _message(sender, to, "starttls auth")
    with smtplib.SMTP("localhost", mail_server.submission_port, timeout=30) as client:
        client.ehlo()
        assert "auth" not in client.esmtp_features  # AUTH only after STARTTLS
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            client.sendmail(sender, [to], msg.as_bytes())  # no TLS: refused
        assert info.value.smtp_code == 530
        client.starttls(context=mail_server.ssl_context())
        client.ehlo()
        with pytest.raises(smtplib.SMTPException):
            client.sendmail(sender, [to], msg.as_bytes())  # TLS but no AUTH: refused
        assert {"PLAIN", "LOGIN", "XOAUTH2"} <= set(client.esmtp_features["auth"].upper().split())
        client.login(sender, password)
        client.sendmail(sender, [to], msg.as_bytes())
    assert _received(mail_server, to, msg["Message-ID"])["From"] == sender


def test_implicit_tls_auth_and_wrong_password(mail_server: MailServer) -> None:
    sender, to = mail_server.new_address("tls"), mail_server.new_address("rcpt")
    password = mail_server.add_user(sender).read_text().strip()
    mail_server.add_user(to)
    msg = _message(sender, to, "implicit tls")
    context = mail_server.ssl_context()
    with smtplib.SMTP_SSL("localhost", mail_server.smtps_port, context=context) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            client.login(sender, password + "-wrong")
        assert info.value.smtp_code == 535
    with smtplib.SMTP_SSL("localhost", mail_server.smtps_port, context=context) as client:
        client.login(sender, password)
        client.sendmail(sender, [to], msg.as_bytes())
    assert _received(mail_server, to, msg["Message-ID"])["Subject"] == "implicit tls"


def test_tls_verification_fails_without_the_test_ca(mail_server: MailServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        with smtplib.SMTP_SSL(
            "localhost", mail_server.smtps_port, context=ssl.create_default_context(), timeout=10
        ):
            pass


def test_xoauth2_with_a_refreshed_token(mail_server: MailServer) -> None:
    grant = mail_server.add_oauth_user(mail_server.new_address("oauth"))
    to = mail_server.new_address("rcpt")
    mail_server.add_user(to)
    answer = httpx.post(
        grant.token_url,
        data={
            "grant_type": "refresh_token",
            "client_id": grant.client_id,
            "client_secret": grant.client_secret_file.read_text().strip(),
            "refresh_token": grant.refresh_token_file.read_text().strip(),
        },
    )
    assert answer.status_code == 200
    token = answer.json()["access_token"]
    assert answer.json()["token_type"] == "Bearer"

    def xoauth2(value: str) -> str:
        return base64.b64encode(
            f"user={grant.address}\x01auth=Bearer {value}\x01\x01".encode()
        ).decode()

    msg = _message(grant.address, to, "xoauth2")
    with smtplib.SMTP("localhost", mail_server.submission_port, timeout=30) as client:
        client.starttls(context=mail_server.ssl_context())
        client.ehlo()
        code, _ = client.docmd("AUTH", "XOAUTH2 " + xoauth2("not-a-token"))
        assert code == 334  # the SASL error challenge (RFC 7628 style), then 535
        code, _ = client.docmd("")
        assert code == 535
        code, _ = client.docmd("AUTH", "XOAUTH2 " + xoauth2(token))
        assert code == 235
        client.sendmail(grant.address, [to], msg.as_bytes())
    assert _received(mail_server, to, msg["Message-ID"])["From"] == grant.address
    assert mail_server.revoke_access_tokens(grant.address) == 1
    with smtplib.SMTP("localhost", mail_server.submission_port, timeout=30) as client:
        client.starttls(context=mail_server.ssl_context())
        client.ehlo()
        code, _ = client.docmd("AUTH", "XOAUTH2 " + xoauth2(token))
        assert code == 334  # revoked: refused, with the SASL error challenge ...
        code, _ = client.docmd("")
        assert code == 535  # ... then the failure, so the session can QUIT cleanly
    bad = httpx.post(
        grant.token_url,
        data={"grant_type": "refresh_token", "client_id": grant.client_id,
              "client_secret": "wrong", "refresh_token": "x"},
    )  # fmt: skip
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"


def test_unknown_user_gets_an_rfc3464_report(mail_server: MailServer) -> None:
    sender = mail_server.new_address("bounced")
    mail_server.add_user(sender)
    missing = mail_server.new_address("nobody", "prospects.test")
    msg = _message(sender, missing, "to nobody")
    mail_server.deliver(msg.as_bytes(), missing, sender=sender)
    reports = mail_server.wait_for(sender)
    assert reports, "no delivery report"
    report = email.message_from_bytes(reports[0])
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "Action: failed" in text and "Status: 5.1.1" in text
    assert missing.lower() in text.lower()
