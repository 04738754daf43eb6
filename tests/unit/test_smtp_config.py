"""The SMTP adapter config: parsing, validation (``invalid_config``) and the pool key.

No server: the connection-time behaviour is in tests/integration/test_smtp_auth.py.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

from streams.providers import OutboundEmail, SmtpConfig, SmtpProvider
from streams.providers.base import AdapterFailureError
from streams.providers.oauth import GOOGLE_TOKEN_URL
from streams.providers.smtp import _raise_if_tls

CANARY = "s3cr3t-canary-value"
REF = {"secret": "env:DRIPDROP_TEST_SMTP_PASSWORD"}
OAUTH = {
    "token_url": "http://127.0.0.1:1/token",
    "client_id": "client.apps.local",
    "client_secret": {"secret": "env:DRIPDROP_TEST_CLIENT_SECRET"},
    "refresh_token": {"secret": "env:DRIPDROP_TEST_REFRESH"},
}


def parse(**config: Any) -> SmtpConfig:
    return SmtpConfig.from_adapter_config({"host": "smtp.example.com", **config})


def invalid(**config: Any) -> AdapterFailureError:
    with pytest.raises(AdapterFailureError) as info:
        SmtpConfig.from_adapter_config(config)
    assert info.value.reason == "invalid_config"
    assert CANARY not in str(info.value)
    return info.value


def test_defaults_and_a_password_reference() -> None:
    config = parse(port=587, start_tls=True, username="ana@example.com", password=REF)
    assert config.password == REF  # kept as the reference
    assert (config.use_tls, config.start_tls, config.tls_ca_file) == (False, True, None)
    assert config.allow_plaintext_auth is False
    assert parse().start_tls is None and parse().port == 25


def test_ca_file_alias() -> None:
    assert parse(tls_ca_file="/etc/ca.pem").tls_ca_file == "/etc/ca.pem"
    assert parse(ca_file="/etc/ca.pem").tls_ca_file == "/etc/ca.pem"  # as in the inbound config


@pytest.mark.parametrize(
    ("config", "detail"),
    [
        ({}, "missing host"),
        ({"host": "h", "port": "not-a-port"}, "ValueError"),
        ({"host": "h", "username": "u", "password": CANARY}, "password must be a secret"),
        ({"host": "h", "password": REF}, "credentials need a username"),
        ({"host": "h", "username": "u", "password": REF, "oauth2": OAUTH}, "exclusive"),
        ({"host": "h", "use_tls": True, "start_tls": True}, "use_tls and start_tls"),
        ({"host": "h", "use_tls": "false"}, "use_tls must be true or false"),
        ({"host": "h", "start_tls": "yes"}, "start_tls must be"),
        ({"host": "h", "tls_ca_file": 7}, "tls_ca_file must be a str"),
        ({"host": "h", "username": "u", "oauth2": "x"}, "oauth2 must be an object"),
        (
            {"host": "h", "username": "u", "oauth2": {**OAUTH, "refresh_token": CANARY}},
            "oauth2.refresh_token must be a secret",
        ),
        (
            {"host": "h", "username": "u", "oauth2": {**OAUTH, "client_secret": CANARY}},
            "oauth2.client_secret must be a secret",
        ),
        (
            {"host": "h", "username": "u", "oauth2": {**OAUTH, "client_id": None}},
            "oauth2.client_id missing",
        ),
        (
            {"host": "h", "username": "ana@example.com", "oauth2": {**OAUTH, "token_url": None}},
            "oauth2.token_url missing",
        ),
    ],
)
def test_invalid_config(config: dict[str, Any], detail: str) -> None:
    assert detail in invalid(**config).detail


def test_token_url_defaults_to_google_only_for_gmail_addresses() -> None:
    oauth = {k: v for k, v in OAUTH.items() if k != "token_url"}
    for username in ("ana@gmail.com", "Ana@GoogleMail.com"):
        config = parse(username=username, oauth2=oauth)
        assert config.oauth2 is not None and config.oauth2.token_url == GOOGLE_TOKEN_URL
    config = parse(username="ana@example.com", oauth2=OAUTH)
    assert config.oauth2 is not None and config.oauth2.token_url == OAUTH["token_url"]


def test_pool_key_holds_references_not_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIPDROP_TEST_SMTP_PASSWORD", CANARY)
    config = parse(username="ana@example.com", password=REF)
    assert CANARY not in repr(config.pool_key) and CANARY not in repr(config)
    hash(config.pool_key)  # a dict key in the provider registry
    assert parse(username="ana@example.com", password=REF).pool_key == config.pool_key
    other = {"secret": "env:OTHER"}
    assert parse(username="ana@example.com", password=other).pool_key != config.pool_key
    assert parse(username="ana@example.com", oauth2=OAUTH).pool_key != config.pool_key
    assert parse(username="ana@example.com", password=REF, tls_ca_file="/ca").pool_key != (
        config.pool_key
    )


def _email() -> OutboundEmail:
    return OutboundEmail("ana@example.com", "lead@example.test", "Hi", "Hello")


def test_unresolvable_password_is_secret_unavailable_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Port 1 on 127.0.0.1 would refuse: the failure is the secret, found first."""
    monkeypatch.delenv("DRIPDROP_TEST_SMTP_PASSWORD", raising=False)
    config = SmtpConfig.from_adapter_config(
        {"host": "127.0.0.1", "port": 1, "username": "ana@example.com", "password": REF}
    )

    async def run() -> None:
        provider = SmtpProvider(config)
        try:
            await provider.send(_email())
        finally:
            await provider.close()

    with pytest.raises(AdapterFailureError) as info:
        asyncio.run(run())
    assert (info.value.reason, info.value.detail) == ("secret_unavailable", "password")


def test_unreadable_ca_file_is_tls_failed(tmp_path: Any) -> None:
    config = SmtpConfig.from_adapter_config(
        {"host": "127.0.0.1", "port": 1, "use_tls": True, "tls_ca_file": str(tmp_path / "no")}
    )

    async def run() -> None:
        provider = SmtpProvider(config)
        try:
            await provider.send(_email())
        finally:
            await provider.close()

    with pytest.raises(AdapterFailureError) as info:
        asyncio.run(run())
    assert info.value.reason == "tls_failed"


def test_ssl_errors_anywhere_in_the_chain_are_tls_failed() -> None:
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "unable to get local issuer certificate"
    try:
        try:
            raise cause
        except ssl.SSLError as exc:
            raise OSError("connect failed") from exc
    except OSError as wrapped:
        with pytest.raises(AdapterFailureError) as info:
            _raise_if_tls(wrapped)
    assert info.value.reason == "tls_failed"
    assert info.value.detail == "unable to get local issuer certificate"
    _raise_if_tls(OSError("refused"))  # not TLS: returns, the caller classifies
