"""One-click unsubscribe tokens and headers (RFC 8058, SPEC §13). Pure: the key is passed in.

A token binds tenant, enrollment and recipient under HMAC-SHA256: ``<payload>.<mac>``, both
base64url without padding, the payload the JSON array ``["v1", tenant, enrollment,
recipient]``. Anyone holding the link may unsubscribe that recipient from that tenant — the
point of one-click — but cannot forge a token for another recipient, enrollment or tenant
without the key. The recipient is readable in the token (as in most providers' links);
the link goes only to that recipient.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import quote

from dripdrop_core.models import Mode, SequenceVersion

VERSION = "v1"
MAX_TOKEN_LENGTH = 2048
ONE_CLICK = "List-Unsubscribe=One-Click"
"""The only ``List-Unsubscribe-Post`` value RFC 8058 §3.1 allows, and the POST body."""


class InvalidTokenError(ValueError):
    """The token is malformed or its signature does not match (forged or altered)."""


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """What a valid token names."""

    tenant_key: str
    enrollment_id: str
    recipient: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> bytes:
    return hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()


def make_token(key: bytes, tenant_key: str, enrollment_id: str, recipient: str) -> str:
    payload = _b64(
        json.dumps([VERSION, tenant_key, enrollment_id, recipient], separators=(",", ":")).encode()
    )
    return f"{payload}.{_b64(_mac(key, payload))}"


def read_token(key: bytes, token: str) -> Unsubscribe:
    """Check the signature (constant time), then decode. Raises ``InvalidTokenError``."""
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise InvalidTokenError("malformed token")
    payload, mac = token.split(".")
    try:
        given = _unb64(mac)
    except ValueError:
        raise InvalidTokenError("malformed token") from None
    if not hmac.compare_digest(given, _mac(key, payload)):
        raise InvalidTokenError("bad signature")
    try:
        version, tenant, enrollment, recipient = json.loads(_unb64(payload))
    except ValueError:
        raise InvalidTokenError("malformed payload") from None
    if version != VERSION or not all(
        isinstance(v, str) and v for v in (tenant, enrollment, recipient)
    ):
        raise InvalidTokenError("malformed payload")
    return Unsubscribe(tenant, enrollment, recipient)


def unsubscribe_url(base_url: str, token: str) -> str:
    """``{base_url}/u/{token}``: the HTTPS link for the header and ``{{ unsubscribe_url }}``."""
    return f"{base_url.rstrip('/')}/u/{token}"


def list_unsubscribe_headers(url: str, mailto: str | None, token: str) -> dict[str, str]:
    """``List-Unsubscribe`` (HTTPS first, then ``mailto:``) and ``List-Unsubscribe-Post``."""
    values = [f"<{url}>"]
    if mailto:
        values.append(f"<mailto:{mailto}?subject={quote('unsubscribe ' + token)}>")
    return {"List-Unsubscribe": ", ".join(values), "List-Unsubscribe-Post": ONE_CLICK}


@dataclass(frozen=True, slots=True)
class OneClickLinks:
    """What the links of every opted-in send are made of (the shell resolves the key).

    Attributes:
        key: The HMAC key the endpoint (``dripdrop web``) checks tokens with.
        base_url: Where the endpoint is reached; the link is ``{base_url}/u/{token}``.
        mailto: The address of the ``mailto:`` alternative, or ``None`` for none.
    """

    key: bytes
    base_url: str
    mailto: str | None = None


@dataclass(frozen=True, slots=True)
class OneClick:
    """The unsubscribe link of one enrollment's sends and the headers that carry it."""

    url: str
    headers: dict[str, str]


def is_one_click_on(version: SequenceVersion) -> bool:
    """Whether the version's sends carry one-click unsubscribe (SPEC §13): its own
    ``one_click_unsubscribe`` when set, else on for lifecycle and off for outbound."""
    if version.one_click_unsubscribe is not None:
        return version.one_click_unsubscribe
    return version.mode is Mode.LIFECYCLE


def one_click(
    links: OneClickLinks, tenant_key: str, enrollment_id: str, recipient: str
) -> OneClick:
    """The link and ``List-Unsubscribe`` / ``List-Unsubscribe-Post`` headers of a send: the
    token binds tenant, enrollment and recipient, so every send of the enrollment has the
    same link and a POST to it stops that enrollment."""
    token = make_token(links.key, tenant_key, enrollment_id, recipient)
    url = unsubscribe_url(links.base_url, token)
    return OneClick(url=url, headers=list_unsubscribe_headers(url, links.mailto, token))
