"""The SMTP provider against the real Postfix + Dovecot (+ the local OAuth2 server).

Submission (12587) with STARTTLS and AUTH PLAIN/LOGIN, SMTPS (12465) with implicit TLS,
XOAUTH2 with a token from a refresh-token grant (and a revoked token refreshed once),
certificate verification on, and a password file rewritten between two connections.
Every message is read back over IMAPS and its threading headers compared byte for byte.
"""

from __future__ import annotations

import asyncio
import email
import secrets
import time
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from streams.providers import OutboundEmail, SmtpConfig, SmtpProvider
from streams.providers.base import AdapterFailureError
from tests.integration.mail_fixtures import MailServer

pytestmark = pytest.mark.integration


def _thread() -> dict[str, str]:
    tag = secrets.token_hex(6)
    return {
        "Message-ID": f"<{tag}-3@mail.dripdrop.test>",
        "In-Reply-To": f"<{tag}-2@mail.dripdrop.test>",
        "References": f"<{tag}-1@mail.dripdrop.test> <{tag}-2@mail.dripdrop.test>",
    }


def _email(sender: str, to: str, subject: str = "Quick question") -> OutboundEmail:
    return OutboundEmail(
        from_address=sender,
        recipient=to,
        subject=subject,
        body_text="Hi,\n.\nA line with a single dot above.\n",
        body_html="<p>Hi</p>",
        headers=_thread(),
    )


def _config(**config: Any) -> SmtpConfig:
    """An adapter config as the API stores it, read by the provider's own parser."""
    return SmtpConfig.from_adapter_config({"host": "localhost", **config})


def _send(config: SmtpConfig, *emails: OutboundEmail) -> list[str]:
    async def run() -> list[str]:
        provider = SmtpProvider(config)
        try:
            return [await provider.send(message) for message in emails]
        finally:
            await provider.close()

    return asyncio.run(run())


def _failure(config: SmtpConfig, message: OutboundEmail) -> AdapterFailureError:
    with pytest.raises(AdapterFailureError) as info:
        _send(config, message)
    return info.value


def _delivered(mail_server: MailServer, message: OutboundEmail) -> Message:
    """The message as Dovecot stored it, its threading headers checked."""
    wanted = message.headers["Message-ID"]
    for raw in mail_server.wait_for(message.recipient):
        parsed = email.message_from_bytes(raw)
        if parsed["Message-ID"] == wanted:
            for name, value in message.headers.items():
                assert parsed[name] == value, name
            assert parsed["From"] == message.from_address
            return parsed
    raise AssertionError(f"{wanted} not delivered to {message.recipient}")


def _nothing_delivered(mail_server: MailServer, to: str) -> None:
    """Only a marker sent afterwards through the MX port arrives: the failed send left
    nothing (reading the mailbox right away could race Dovecot's re-read of its user file)."""
    marker = f"<marker-{secrets.token_hex(6)}@dripdrop.test>"
    mail_server.deliver(
        f"From: postmaster@dripdrop.test\r\nTo: {to}\r\nSubject: marker\r\n"
        f"Message-ID: {marker}\r\n\r\nmarker\r\n".encode(),
        to,
    )
    received = [email.message_from_bytes(raw)["Message-ID"] for raw in mail_server.wait_for(to)]
    assert received == [marker]


def _mailbox(mail_server: MailServer, local: str) -> tuple[str, Path]:
    address = mail_server.new_address(local)
    password_file = mail_server.add_user(address)
    _settle()
    return address, password_file


def _settle() -> None:
    """Wait into the next second after changing the users file.

    Dovecot 2.3 checks its passwd-file for changes at most once per second, so a user added
    in the second of its last check is unknown (AUTH, IMAP login, LMTP RCPT) until the
    next one. Not a timing assertion: only the order of the change and the first lookup.
    """
    time.sleep(1.01 - time.time() % 1)


def _secret(path: Path) -> dict[str, str]:
    return {"secret": f"file:{path}"}


def test_submission_starttls_auth_with_a_password_file(mail_server: MailServer) -> None:
    sender, password_file = _mailbox(mail_server, "sub")
    to, _ = _mailbox(mail_server, "rcpt")
    config = _config(
        port=mail_server.submission_port,
        start_tls=True,
        tls_ca_file=str(mail_server.ca_file),
        username=sender,
        password=_secret(password_file),
    )
    first, second = _email(sender, to, "first"), _email(sender, to, "second")
    ids = _send(config, first, second)  # the second on the pooled, authenticated connection

    assert all(ids)
    _delivered(mail_server, first)
    assert _delivered(mail_server, second)["Subject"] == "second"


def test_smtps_implicit_tls(mail_server: MailServer) -> None:
    sender, password_file = _mailbox(mail_server, "smtps")
    to, _ = _mailbox(mail_server, "rcpt")
    message = _email(sender, to, "implicit TLS")
    _send(
        _config(
            port=mail_server.smtps_port,
            use_tls=True,
            tls_ca_file=str(mail_server.ca_file),
            username=sender,
            password=_secret(password_file),
        ),
        message,
    )
    assert _delivered(mail_server, message)["Subject"] == "implicit TLS"


def test_opportunistic_starttls_verifies_too(mail_server: MailServer) -> None:
    """``start_tls`` left out: STARTTLS because the server offers it, the CA still checked."""
    sender, password_file = _mailbox(mail_server, "opp")
    to, _ = _mailbox(mail_server, "rcpt")
    message = _email(sender, to)
    base = {"port": mail_server.submission_port, "username": sender}
    _send(
        _config(**base, tls_ca_file=str(mail_server.ca_file), password=_secret(password_file)),
        message,
    )
    _delivered(mail_server, message)
    failure = _failure(_config(**base, password=_secret(password_file)), _email(sender, to))
    assert failure.reason == "tls_failed"


def test_wrong_password_is_an_adapter_failure(mail_server: MailServer) -> None:
    sender, password_file = _mailbox(mail_server, "wrong")
    to, _ = _mailbox(mail_server, "rcpt")
    password = password_file.read_text().strip()
    wrong = mail_server.secrets_dir / f"{sender}.wrong"
    wrong.write_text(password + "-wrong\n")
    for port, tls in (
        (mail_server.submission_port, {"start_tls": True}),
        (mail_server.smtps_port, {"use_tls": True}),
    ):
        config = _config(
            port=port,
            **tls,
            tls_ca_file=str(mail_server.ca_file),
            username=sender,
            password=_secret(wrong),
        )
        failure = _failure(config, _email(sender, to))
        assert failure.reason == "auth_failed"
        assert failure.smtp_code == 535
        assert password not in str(failure) and password not in repr(failure.__cause__)
    _nothing_delivered(mail_server, to)


def test_missing_password_file_is_secret_unavailable(mail_server: MailServer) -> None:
    sender, _ = _mailbox(mail_server, "nofile")
    config = _config(
        port=mail_server.submission_port,
        start_tls=True,
        tls_ca_file=str(mail_server.ca_file),
        username=sender,
        password={"secret": f"file:{mail_server.secrets_dir}/absent-{secrets.token_hex(4)}"},
    )
    failure = _failure(config, _email(sender, "someone@example.test"))
    assert failure.reason == "secret_unavailable"
    assert failure.detail == "password"


@pytest.mark.parametrize("mode", ["start_tls", "use_tls"])
def test_certificate_verification_is_on_by_default(mail_server: MailServer, mode: str) -> None:
    """Without ``tls_ca_file`` the test CA is unknown: the handshake fails, nothing is sent
    and the password never leaves (AUTH is only offered after TLS)."""
    sender, password_file = _mailbox(mail_server, "verify")
    to, _ = _mailbox(mail_server, "rcpt")
    port = mail_server.submission_port if mode == "start_tls" else mail_server.smtps_port
    config = _config(port=port, **{mode: True}, username=sender, password=_secret(password_file))
    failure = _failure(config, _email(sender, to))
    assert failure.reason == "tls_failed"
    _nothing_delivered(mail_server, to)


def test_rotated_password_file_is_read_at_the_next_connection(mail_server: MailServer) -> None:
    """One provider, never restarted: a stale file fails, the rewritten one is used by the
    next connection; then the server and the file change together and a new connection
    (a second concurrent send) logs in with the new password."""
    sender, server_file = _mailbox(mail_server, "rotate")
    to, _ = _mailbox(mail_server, "rcpt")
    old = server_file.read_text().strip()
    password_file = mail_server.secrets_dir / f"{sender}.rotating"
    password_file.write_text("not-the-password\n")
    config = _config(
        port=mail_server.submission_port,
        start_tls=True,
        tls_ca_file=str(mail_server.ca_file),
        username=sender,
        password=_secret(password_file),
        pool_size=2,
    )
    first, second, third = (_email(sender, to, s) for s in ("first", "second", "third"))

    async def run() -> None:
        provider = SmtpProvider(config)
        try:
            with pytest.raises(AdapterFailureError) as info:
                await provider.send(first)
            assert info.value.reason == "auth_failed"
            password_file.write_text(old + "\n")
            await provider.send(first)  # a new connection reads the file again

            new = secrets.token_hex(12)
            mail_server.set_password(sender, new)
            password_file.write_text(new + "\n")
            _settle()
            # The pooled connection stays logged in; the second send needs a new one.
            await asyncio.gather(provider.send(second), provider.send(third))
        finally:
            await provider.close()

    asyncio.run(run())
    for message in (first, second, third):
        _delivered(mail_server, message)
    assert config.password == _secret(password_file)  # the reference, never the value


def test_xoauth2_token_from_the_refresh_grant(mail_server: MailServer) -> None:
    grant = mail_server.add_oauth_user(mail_server.new_address("oauth"))
    to, _ = _mailbox(mail_server, "rcpt")
    first, second = _email(grant.address, to, "xoauth2"), _email(grant.address, to, "again")
    config = _config(
        port=mail_server.submission_port,
        start_tls=True,
        tls_ca_file=str(mail_server.ca_file),
        username=grant.address,
        oauth2=grant.config(),
    )
    _send(config, first, second)
    _delivered(mail_server, first)
    _delivered(mail_server, second)
    assert mail_server.oauth_grants(grant.client_id) == 1  # cached across sends


def test_xoauth2_revoked_token_is_refreshed_once(mail_server: MailServer) -> None:
    grant = mail_server.add_oauth_user(mail_server.new_address("revoked"))
    to, _ = _mailbox(mail_server, "rcpt")
    config = _config(
        port=mail_server.smtps_port,
        use_tls=True,
        tls_ca_file=str(mail_server.ca_file),
        username=grant.address,
        oauth2=grant.config(),
        pool_size=2,
    )
    first, second, third = (_email(grant.address, to, s) for s in ("first", "second", "third"))

    async def run() -> None:
        provider = SmtpProvider(config)
        try:
            await provider.send(first)
            assert mail_server.revoke_access_tokens(grant.address) == 1
            # One send reuses the logged-in connection; the other opens a new one, whose
            # cached (revoked) token is refused: one refresh, then it goes through.
            await asyncio.gather(provider.send(second), provider.send(third))
        finally:
            await provider.close()

    asyncio.run(run())
    for message in (first, second, third):
        _delivered(mail_server, message)
    assert mail_server.oauth_grants(grant.client_id) == 2


def test_xoauth2_token_for_another_mailbox_is_auth_failed(mail_server: MailServer) -> None:
    """Every fresh token is refused (it belongs to someone else): one retry, no loop."""
    grant = mail_server.add_oauth_user(mail_server.new_address("owner"))
    other, _ = _mailbox(mail_server, "other")
    config = _config(
        port=mail_server.submission_port,
        start_tls=True,
        tls_ca_file=str(mail_server.ca_file),
        username=other,
        oauth2=grant.config(),
    )
    failure = _failure(config, _email(other, "someone@example.test"))
    assert failure.reason == "auth_failed"
    assert mail_server.oauth_grants(grant.client_id) == 2


def test_xoauth2_refused_grant_is_an_adapter_failure(mail_server: MailServer) -> None:
    grant = mail_server.add_oauth_user(mail_server.new_address("badclient"))
    wrong = mail_server.secrets_dir / f"{grant.client_id}.wrong"
    wrong.write_text("not-the-client-secret\n")
    config = _config(
        port=mail_server.submission_port,
        start_tls=True,
        tls_ca_file=str(mail_server.ca_file),
        username=grant.address,
        oauth2={**grant.config(), "client_secret": _secret(wrong)},
    )
    failure = _failure(config, _email(grant.address, "someone@example.test"))
    assert failure.reason == "token_refused"
    assert "not-the-client-secret" not in str(failure)


def test_no_credentials_over_plain_text(mail_server: MailServer) -> None:
    """``start_tls: false`` with a password: refused before AUTH (Postfix would not offer
    AUTH there anyway); the password is never sent in clear."""
    sender, password_file = _mailbox(mail_server, "plain")
    config = _config(
        port=mail_server.submission_port,
        start_tls=False,
        username=sender,
        password=_secret(password_file),
    )
    assert _failure(config, _email(sender, "someone@example.test")).reason == "tls_required"
