"""Secrets by reference (SPEC §7): config holds ``{"secret": "env:NAME"}``, never the value.

A reference travels through the API, the outbox, the ``config`` topic, the processor's
tables and RocksDB; only the sender resolves it, at send time, so none of those ever
holds the secret itself and a rotated file is picked up without a restart.

Schemes: ``env:NAME`` (an environment variable), ``file:/abs/path`` (the file's content,
re-read on every call, trailing newline stripped) and any scheme added with
``register_resolver`` (a vault client, say).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "SECRET_KEYS",
    "InlineSecretError",
    "SecretError",
    "check_no_inline_secrets",
    "is_reference",
    "redact",
    "register_resolver",
    "resolve_secret",
]

SECRET_KEYS: frozenset[str] = frozenset(
    {
        "password",
        "passwd",
        "refresh_token",
        "client_secret",
        "api_key",
        "apikey",
        "token",
        "access_token",
        "private_key",
        "secret",
        "secret_key",
        "secret_access_key",
        "aws_secret_access_key",
        "server_token",
        "account_token",
        "webhook_secret",
        "signing_key",
        "dkim_private_key",
    }
)
"""Config keys (at any nesting depth, matched case-insensitively) that must hold a reference."""

REDACTED = "***"


class SecretError(Exception):
    """A reference could not be resolved; the message names the reference, never a value."""


class InlineSecretError(ValueError):
    """A secret key holds a plain value; the message shows the reference form to use instead.

    Attributes:
        key: the dotted path of the offending key (``auth.password``).
    """

    def __init__(self, key: str) -> None:
        super().__init__(
            f"config key {key!r} must be a secret reference, not a value: use "
            '{"secret": "env:NAME"} or {"secret": "file:/path"}'
        )
        self.key = key


def _env(name: str) -> str:
    try:
        return os.environ[name]
    except KeyError:
        raise SecretError(f"environment variable {name!r} is not set") from None


def _file(path: str) -> str:
    if not os.path.isabs(path):
        raise SecretError(f"secret file path {path!r} must be absolute")
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"secret file {path!r} unreadable: {type(exc).__name__}") from None


_RESOLVERS: dict[str, Callable[[str], str]] = {"env": _env, "file": _file}


def register_resolver(scheme: str, resolve: Callable[[str], str]) -> None:
    """Add (or replace) the resolver of ``scheme:`` references, e.g. ``vault:path#field``.

    ``resolve`` receives what follows ``scheme:``; it should raise ``SecretError`` when the
    secret is unavailable (any other exception is wrapped into one).
    """
    if not scheme or ":" in scheme:
        raise ValueError(f"invalid secret scheme {scheme!r}")
    _RESOLVERS[scheme] = resolve


def _reference(value: object) -> str | None:
    """The ``scheme:rest`` string of a reference mapping, else None."""
    if isinstance(value, Mapping) and set(value) == {"secret"}:
        ref = value["secret"]
        if isinstance(ref, str) and ":" in ref:
            return ref
    return None


def is_reference(value: object) -> bool:
    """Whether ``value`` is a well-formed ``{"secret": "scheme:…"}`` with a known scheme."""
    ref = _reference(value)
    return ref is not None and ref.partition(":")[0] in _RESOLVERS


def resolve_secret(value: object) -> str:
    """Resolve a reference now (files re-read each call, so rotation needs no restart).

    Raises:
        SecretError: not a reference, unknown scheme, or the secret is unavailable; the
            message never contains the secret (nor a plain value passed by mistake).
    """
    ref = _reference(value)
    if ref is None:
        raise SecretError('not a secret reference: expected {"secret": "env:NAME"}')
    scheme, _, rest = ref.partition(":")
    resolver = _RESOLVERS.get(scheme)
    if resolver is None:
        raise SecretError(f"unknown secret scheme {scheme!r}")
    try:
        secret = resolver(rest)
    except SecretError:
        raise
    except Exception as exc:  # a plugged-in resolver's own error: keep only its type
        raise SecretError(f"{scheme} resolver failed: {type(exc).__name__}") from None
    if not isinstance(secret, str) or not secret:
        raise SecretError(f"secret {scheme}:{rest} is empty")
    return secret


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and key.lower() in SECRET_KEYS


def _walk_check(value: object, path: str) -> None:
    if isinstance(value, Mapping):
        if _reference(value) is not None:
            return
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if _is_secret_key(key):
                if item is None:
                    continue
                if not is_reference(item):
                    raise InlineSecretError(child)
            else:
                _walk_check(item, child)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _walk_check(item, f"{path}[{index}]")


def check_no_inline_secrets(config: Mapping[str, Any]) -> None:
    """Refuse a config where a ``SECRET_KEYS`` key (any depth) holds anything but a reference.

    ``None`` is allowed (no secret). A reference with an unknown scheme is refused too, so
    a typo is caught at creation rather than at the first send.

    Raises:
        InlineSecretError: naming the key and showing the reference form.
    """
    _walk_check(config, "")


def _walk_redact(value: object) -> object:
    if isinstance(value, Mapping):
        if _reference(value) is not None:
            return dict(value)
        return {
            key: (
                item
                if item is None or _reference(item) is not None
                else REDACTED
                if _is_secret_key(key)
                else _walk_redact(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_walk_redact(item) for item in value]
    return value


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy for display: references kept as-is, any other value of a secret key → ``***``."""
    result = _walk_redact(config)
    assert isinstance(result, dict)
    return result
