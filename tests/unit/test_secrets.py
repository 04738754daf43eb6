"""Secrets by reference: resolution, rotation, inline refusal and redaction (SPEC §7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.secrets import (
    SECRET_KEYS,
    InlineSecretError,
    SecretError,
    check_no_inline_secrets,
    is_reference,
    redact,
    register_resolver,
    resolve_secret,
)

CANARY = "canary-7f3e-not-for-logs"


def test_env_reference_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DD_TEST_SMTP_PASSWORD", CANARY)
    assert resolve_secret({"secret": "env:DD_TEST_SMTP_PASSWORD"}) == CANARY


def test_missing_env_raises_without_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DD_TEST_UNSET", raising=False)
    with pytest.raises(SecretError, match="DD_TEST_UNSET"):
        resolve_secret({"secret": "env:DD_TEST_UNSET"})


def test_file_reference_is_reread_on_each_call(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("first\n")
    ref = {"secret": f"file:{path}"}
    assert resolve_secret(ref) == "first"
    path.write_text("second")
    assert resolve_secret(ref) == "second"


def test_file_reference_errors(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="absolute"):
        resolve_secret({"secret": "file:relative/pw"})
    with pytest.raises(SecretError, match="unreadable"):
        resolve_secret({"secret": f"file:{tmp_path / 'missing'}"})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SecretError, match="empty"):
        resolve_secret({"secret": f"file:{empty}"})


def test_plain_value_is_not_resolved_and_not_echoed() -> None:
    with pytest.raises(SecretError) as info:
        resolve_secret(CANARY)
    assert CANARY not in str(info.value)
    with pytest.raises(SecretError, match="unknown secret scheme"):
        resolve_secret({"secret": "nosuch:thing"})


def test_registered_resolver_and_wrapped_errors() -> None:
    store = {"mailbox/1": CANARY}

    def vault(path: str) -> str:
        return store[path]

    register_resolver("testvault", vault)
    assert resolve_secret({"secret": "testvault:mailbox/1"}) == CANARY
    with pytest.raises(SecretError, match="KeyError") as info:
        resolve_secret({"secret": "testvault:mailbox/2"})
    assert CANARY not in str(info.value)
    assert is_reference({"secret": "testvault:x"})
    with pytest.raises(ValueError):
        register_resolver("bad:scheme", vault)


@pytest.mark.parametrize(
    "config,key",
    [
        ({"host": "h", "password": CANARY}, "password"),
        ({"oauth": {"refresh_token": CANARY}}, "oauth.refresh_token"),
        ({"accounts": [{"api_key": CANARY}]}, "accounts[0].api_key"),
        ({"Password": {"secret": CANARY}}, "Password"),
        ({"client_secret": {"secret": "nosuch:x"}}, "client_secret"),
        ({"token": 12345}, "token"),
    ],
)
def test_inline_secret_refused(config: dict[str, object], key: str) -> None:
    with pytest.raises(InlineSecretError) as info:
        check_no_inline_secrets(config)
    message = str(info.value)
    assert info.value.key == key
    assert CANARY not in message
    assert '{"secret": "env:NAME"}' in message and '{"secret": "file:/path"}' in message
    assert isinstance(info.value, ValueError)


def test_references_and_plain_keys_accepted() -> None:
    check_no_inline_secrets(
        {
            "host": "smtp.example.com",
            "username": "jane",
            "password": {"secret": "env:X"},
            "oauth": {"refresh_token": {"secret": "file:/run/secrets/rt"}, "client_id": "abc"},
            "api_key": None,
        }
    )


def test_redact_keeps_references_and_hides_values() -> None:
    config = {
        "host": "h",
        "password": CANARY,
        "refresh_token": {"secret": "env:RT"},
        "nested": {"api_key": CANARY, "port": 587},
        "list": [{"token": CANARY}],
        "access_token": None,
    }
    shown = redact(config)
    assert shown == {
        "host": "h",
        "password": "***",
        "refresh_token": {"secret": "env:RT"},
        "nested": {"api_key": "***", "port": 587},
        "list": [{"token": "***"}],
        "access_token": None,
    }
    assert CANARY not in repr(shown)
    assert config["password"] == CANARY  # the input is not modified


def test_secret_keys_cover_the_agreed_names() -> None:
    for key in (
        "password",
        "refresh_token",
        "client_secret",
        "api_key",
        "token",
        "access_token",
        "private_key",
    ):
        assert key in SECRET_KEYS
