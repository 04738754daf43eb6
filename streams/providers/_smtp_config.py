"""An SMTP account's settings (``SmtpConfig``): parsing and validating an adapter's config,
and resolving its secret references when a connection is opened (never kept)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.providers.base import AdapterFailureError
from streams.secrets import SecretError, is_reference, resolve_secret

DEFAULT_POOL_SIZE = 4
"""Open connections per server: enough to hide the ~3 round trips of connection setup
(EHLO, optional STARTTLS/AUTH) without looking like a flood to a mailbox provider."""

DEFAULT_TIMEOUT_SECONDS = 30.0


GOOGLE_MAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
"""``username`` domains whose ``oauth2.token_url`` may be left out (Google's is used)."""


@dataclass(frozen=True, slots=True)
class SmtpOAuth2:
    """An OAuth 2.0 refresh-token grant for XOAUTH2; the secrets are references."""

    token_url: str
    client_id: str
    refresh_token: Mapping[str, Any]
    client_secret: Mapping[str, Any] | None = None
    scope: str | None = None

    @property
    def key(self) -> tuple[object, ...]:
        return (
            self.token_url,
            self.client_id,
            _reference_key(self.refresh_token),
            _reference_key(self.client_secret),
            self.scope,
        )


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Connection settings of one SMTP server account (an adapter's ``config``).

    ``password`` and the ``oauth2`` secrets are references (``{"secret": "env:NAME"}``),
    resolved at each new connection; the resolved value is never stored here.
    """

    host: str
    port: int = 25
    username: str | None = None
    password: Mapping[str, Any] | None = None
    oauth2: SmtpOAuth2 | None = None
    use_tls: bool = False
    start_tls: bool | None = None
    tls_ca_file: str | None = None
    allow_plaintext_auth: bool = False
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    pool_size: int = DEFAULT_POOL_SIZE
    local_hostname: str | None = None

    @classmethod
    def from_adapter_config(cls, config: Mapping[str, Any]) -> SmtpConfig:
        """Read ``{"host", "port", "username"?, "password"? | "oauth2"?, "use_tls"?,
        "start_tls"?, "tls_ca_file"?, "allow_plaintext_auth"?, "timeout"?, "pool_size"?,
        "local_hostname"?}`` (``streams.providers.smtp``'s docstring shows
        an example).

        Raises:
            AdapterFailureError: ``invalid_config``: ``host`` missing, a value of the wrong
                type, a password that is not a secret reference, ``password`` and ``oauth2``
                both given, credentials without ``username``, ``use_tls`` with ``start_tls``.
                The detail names the key, never a value.
        """
        try:
            username = _optional(config, "username", str)
            password = config.get("password")
            if password is not None and not is_reference(password):
                raise _InvalidConfigError("password must be a secret reference")
            oauth2 = _oauth2(config.get("oauth2"), username)
            if password is not None and oauth2 is not None:
                raise _InvalidConfigError("password and oauth2 are exclusive")
            if (password is not None or oauth2 is not None) and not username:
                raise _InvalidConfigError("credentials need a username")
            use_tls = _flag(config, "use_tls", False)
            start_tls = config.get("start_tls")
            if start_tls is not None and not isinstance(start_tls, bool):
                raise _InvalidConfigError("start_tls must be true, false or null")
            if use_tls and start_tls:
                raise _InvalidConfigError("use_tls and start_tls are exclusive")
            return cls(
                host=str(config["host"]),
                port=int(config.get("port", 25)),
                username=username,
                password=password,
                oauth2=oauth2,
                use_tls=use_tls,
                start_tls=start_tls,
                tls_ca_file=_optional(config, "tls_ca_file", str)
                or _optional(config, "ca_file", str),
                allow_plaintext_auth=_flag(config, "allow_plaintext_auth", False),
                timeout_seconds=float(config.get("timeout", DEFAULT_TIMEOUT_SECONDS)),
                pool_size=int(config.get("pool_size", DEFAULT_POOL_SIZE)),
                local_hostname=_optional(config, "local_hostname", str),
            )
        except (KeyError, TypeError, ValueError) as exc:
            # Fixing the adapter fixes every held send: an adapter failure, never a bounce.
            raise AdapterFailureError("invalid_config", _config_detail(exc)) from exc

    @property
    def pool_key(self) -> tuple[object, ...]:
        """Accounts that may share connections: same server, same credentials (by
        reference, never the resolved secret), same TLS settings."""
        return (
            self.host,
            self.port,
            self.username,
            _reference_key(self.password),
            self.oauth2.key if self.oauth2 is not None else None,
            self.use_tls,
            self.start_tls,
            self.tls_ca_file,
            self.allow_plaintext_auth,
            self.local_hostname,
        )


class _InvalidConfigError(ValueError):
    """A config problem whose message names a key, never a value."""


def _reference_key(value: object) -> str | None:
    """``httpapi.reference_key`` (the same form), without importing httpx for SMTP."""
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _optional(config: Mapping[str, Any], key: str, kind: type[str]) -> str | None:
    value = config.get(key)
    if value is not None and not isinstance(value, kind):
        raise _InvalidConfigError(f"{key} must be a {kind.__name__}")
    return value


def _flag(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):  # "false" would be truthy: refuse rather than guess
        raise _InvalidConfigError(f"{key} must be true or false")
    return value


def _oauth2(value: object, username: str | None) -> SmtpOAuth2 | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _InvalidConfigError("oauth2 must be an object")
    client_id = _optional(value, "client_id", str)
    if not client_id:
        raise _InvalidConfigError("oauth2.client_id missing")
    refresh_token = value.get("refresh_token")
    if not is_reference(refresh_token):
        raise _InvalidConfigError("oauth2.refresh_token must be a secret reference")
    client_secret = value.get("client_secret")
    if client_secret is not None and not is_reference(client_secret):
        raise _InvalidConfigError("oauth2.client_secret must be a secret reference")
    token_url = _optional(value, "token_url", str)
    if not token_url:
        domain = (username or "").rpartition("@")[2].lower()
        if domain not in GOOGLE_MAIL_DOMAINS:
            raise _InvalidConfigError("oauth2.token_url missing")
        from streams.providers.oauth import GOOGLE_TOKEN_URL

        token_url = GOOGLE_TOKEN_URL
    assert isinstance(refresh_token, Mapping)  # is_reference checked it
    return SmtpOAuth2(
        token_url=token_url,
        client_id=client_id,
        refresh_token=refresh_token,
        client_secret=client_secret if isinstance(client_secret, Mapping) else None,
        scope=_optional(value, "scope", str),
    )


def _config_detail(exc: Exception) -> str:
    """What ``invalid_config`` says: our own messages (key names) or the error's type,
    never ``str(exc)`` of a conversion (``int("…")`` quotes the value)."""
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]}"
    if isinstance(exc, _InvalidConfigError):
        return str(exc)
    return type(exc).__name__


def _secret(reference: object, key: str) -> str:
    """Resolve a secret reference now (a rotated file is read again); never kept.

    Raises:
        AdapterFailureError: ``secret_unavailable``, naming the key, never the value.
    """
    try:
        return resolve_secret(reference)
    except SecretError as exc:
        raise AdapterFailureError("secret_unavailable", key) from exc
