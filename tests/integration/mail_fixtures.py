"""The ``mail_server`` fixture: the real Postfix + Dovecot + OAuth2 server of ``services.py up``.

``infra/mailservers.py`` runs them under ``.dripdrop/mail/``. A test adds its own mailboxes
(unique addresses, so tests never see each other's mail), delivers through Postfix's MX port
and reads back over IMAPS with TLS verification against the test CA. Passwords, client secrets
and refresh tokens are written to files, so tests pass them on as ``{"secret": "file:…"}``.
"""

from __future__ import annotations

import fcntl
import imaplib
import json
import os
import re
import secrets
import smtplib
import socket
import ssl
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra"))
import mailservers as ms  # noqa: E402 - infra/ holds scripts, not a package

MAIL_DOMAIN = ms.MAIL_DOMAINS[0]


@dataclass(frozen=True)
class OAuthGrant:
    """An OAuth2 client + refresh token the local server honours for ``address``."""

    address: str
    token_url: str
    client_id: str
    client_secret_file: Path
    refresh_token_file: Path

    def config(self) -> dict[str, object]:
        """The adapter-config form (secrets by reference)."""
        return {
            "token_url": self.token_url,
            "client_id": self.client_id,
            "client_secret": {"secret": f"file:{self.client_secret_file}"},
            "refresh_token": {"secret": f"file:{self.refresh_token_file}"},
        }


@dataclass
class MailServer:
    """Ports, the CA, and helpers to add users, deliver and fetch mail."""

    host: str = "127.0.0.1"
    smtp_port: int = ms.SMTP_PORT
    submission_port: int = ms.SUBMISSION_PORT
    smtps_port: int = ms.SMTPS_PORT
    imap_port: int = ms.IMAP_PORT
    imaps_port: int = ms.IMAPS_PORT
    lmtp_port: int = ms.LMTP_PORT
    oauth_port: int = ms.OAUTH_PORT
    ca_file: Path = ms.MAIL / "tls" / "ca.pem"
    domains: tuple[str, ...] = ms.MAIL_DOMAINS
    secrets_dir: Path = ms.MAIL / "secrets"
    _passwords: dict[str, str] = field(default_factory=dict)

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.oauth_port}/token"

    @property
    def maillog(self) -> Path:
        return ms.postfix_dir() / "maillog"

    def ssl_context(self) -> ssl.SSLContext:
        """Verification on, trusting only the test CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def new_address(self, local: str = "user", domain: str = MAIL_DOMAIN) -> str:
        return f"{local}-{secrets.token_hex(5)}@{domain}"

    def _secret_file(self, name: str, value: str) -> Path:
        self.secrets_dir.mkdir(parents=True, exist_ok=True)
        path = self.secrets_dir / name
        path.write_text(value + "\n")
        os.chmod(path, 0o600)
        return path

    def add_user(self, address: str, password: str | None = None) -> Path:
        """Create a Dovecot user (and its maildir on first delivery); return its password file.

        Dovecot re-reads the passwd-file when it changes, but checks at most once a second:
        a user added in the second of its last check would be unknown (AUTH, IMAP login,
        LMTP RCPT) until the next one, so this returns in the next second (``_settle``).
        """
        address = address.lower()
        password = password or secrets.token_hex(12)
        with ms.users_file().open("a") as users:
            fcntl.flock(users, fcntl.LOCK_EX)
            users.write(f"{address}:{{PLAIN}}{password}::::::\n")
        self._passwords[address] = password
        _settle()
        return self._secret_file(f"{address}.password", password)

    def set_password(self, address: str, password: str) -> None:
        """Change a user's password in place (a rotated secret at the server side)."""
        address = address.lower()
        with ms.users_file().open("r+") as users:
            fcntl.flock(users, fcntl.LOCK_EX)
            lines = users.read().splitlines()
            prefix = f"{address}:"
            lines = [
                f"{address}:{{PLAIN}}{password}::::::" if line.startswith(prefix) else line
                for line in lines
            ]
            users.seek(0)
            users.truncate()
            users.write("\n".join(lines) + "\n")
        self._passwords[address] = password
        _settle()

    def password(self, address: str) -> str:
        address = address.lower()
        if address not in self._passwords:
            for line in ms.users_file().read_text().splitlines():
                user, _, rest = line.partition(":")
                if user == address:
                    self._passwords[address] = rest.split(":")[0].removeprefix("{PLAIN}")
        return self._passwords[address]

    def add_oauth_user(self, address: str, *, expires_in: int = 3600) -> OAuthGrant:
        """A Dovecot user plus an OAuth2 client and refresh token for it at the local server."""
        self.add_user(address)
        client_id = f"client-{secrets.token_hex(6)}.apps.local"
        client_secret = secrets.token_urlsafe(18)
        refresh_token = "1//local-" + secrets.token_urlsafe(30)
        state_file = ms.oauth_state_file()
        with state_file.open("r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            state = json.loads(handle.read() or "{}")
            state.setdefault("clients", {})[client_id] = {
                "secret": client_secret,
                "expires_in": expires_in,
            }
            state.setdefault("refresh_tokens", {})[refresh_token] = {
                "client_id": client_id,
                "email": address.lower(),
                "scope": "https://mail.google.com/",
            }
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(state))
        return OAuthGrant(
            address=address.lower(),
            token_url=self.token_url,
            client_id=client_id,
            client_secret_file=self._secret_file(f"{client_id}.secret", client_secret),
            refresh_token_file=self._secret_file(f"{client_id}.refresh", refresh_token),
        )

    def revoke_access_tokens(self, address: str) -> int:
        """Make the server forget ``address``'s access tokens (a token revoked before expiry)."""
        body = urllib.parse.urlencode({"email": address.lower()}).encode()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.oauth_port}/admin/revoke", body) as r:
            return int(json.loads(r.read())["revoked"])

    def oauth_grants(self, client_id: str) -> int:
        """How many refresh-token grants the server answered for ``client_id``."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.oauth_port}/admin/stats") as r:
            return int(json.loads(r.read())["grants"].get(client_id, 0))

    def deliver(self, raw: bytes, to: str, *, sender: str | None = None) -> None:
        """Hand ``raw`` to Postfix's MX port (12525) for ``to``; it delivers through LMTP."""
        with smtplib.SMTP(self.host, self.smtp_port, timeout=30) as client:
            client.sendmail(sender or f"postmaster@{MAIL_DOMAIN}", [to], raw)

    def fetch(self, address: str, folder: str = "INBOX") -> list[bytes]:
        """Every message in ``folder`` of ``address``, in UID order, over IMAPS (verified)."""
        client = imaplib.IMAP4_SSL(self.host, self.imaps_port, ssl_context=self.ssl_context())
        try:
            client.login(address.lower(), self.password(address))
            status, _ = client.select(_quote(folder), readonly=True)
            if status != "OK":
                return []
            _, data = client.uid("SEARCH", "ALL")
            uids = data[0].split() if data and data[0] else []
            messages: list[bytes] = []
            for uid in uids:
                _, parts = client.uid("FETCH", uid, "(BODY.PEEK[])")
                for part in parts:
                    if isinstance(part, tuple):
                        messages.append(part[1])
            return messages
        finally:
            try:
                client.logout()
            except (imaplib.IMAP4.error, OSError):
                pass

    def wait_for(
        self, address: str, count: int = 1, folder: str = "INBOX", timeout: float = 60
    ) -> list[bytes]:
        """Poll ``fetch`` until ``count`` messages arrived (Postfix delivers asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.fetch(address, folder)
            if len(messages) >= count or time.monotonic() > deadline:
                return messages
            time.sleep(0.2)


def _quote(folder: str) -> str:
    return folder if re.fullmatch(r"[A-Za-z0-9._/-]+", folder) else '"' + folder + '"'


def _up(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def mail_server_available() -> str | None:
    """None when every mail port answers, else what is missing."""
    ports = (
        ms.SMTP_PORT, ms.SUBMISSION_PORT, ms.SMTPS_PORT, ms.IMAP_PORT, ms.IMAPS_PORT,
        ms.LMTP_PORT, ms.OAUTH_PORT,
    )  # fmt: skip
    down = [p for p in ports if not _up(p)]
    if down or not (ms.MAIL / "tls" / "ca.pem").exists():
        return f"mail servers not running (ports {down} closed): run `make services`"
    return None


@pytest.fixture(scope="session")
def mail_server() -> Iterator[MailServer]:
    """The running Postfix/Dovecot/OAuth2 servers; fails under DRIPDROP_REQUIRE_SERVICES=1."""
    problem = mail_server_available()
    if problem:
        if os.environ.get("DRIPDROP_REQUIRE_SERVICES") == "1":
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    yield MailServer()


def _settle() -> None:
    """Wait into the next second after changing the users file (Dovecot 2.3 checks it for
    changes at most once a second). Orders the change before the first lookup; asserts no
    timing."""
    time.sleep(1.01 - time.time() % 1)
