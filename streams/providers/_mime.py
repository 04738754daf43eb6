"""The message on the wire: RFC 5322 rendering (``build_message``, and ``render_message``'s
fast path, byte for byte the same), DKIM-signed; shared by the SMTP and HTTP-API providers."""

from __future__ import annotations

import random
import re
import sys
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import formatdate, make_msgid

from streams.providers import dkim
from streams.providers.base import OutboundEmail

# CRLF line ends; folding only beyond RFC 5322's hard limit, so ids are never split oddly.
# compat32, not policy.SMTP: the modern policy re-parses every header while flattening.
_MAX_LINE = 998
_WIRE = compat32.clone(linesep="\r\n", max_line_length=_MAX_LINE)

# A header value that compat32 writes verbatim when its line fits in 998 characters (checked
# by a fuzz test against the email package): printable ASCII and tabs, nothing that
# ``str.splitlines`` would cut (VT, FF, FS, GS, RS…).
_VERBATIM_VALUE = re.compile(r"[\t\x20-\x7e]*\Z")
_LINE_ENDS = re.compile(r"\r\n|\r|\n")
_TEXT_PART = (
    'Content-Type: text/{}; charset="utf-8"\r\n'
    "MIME-Version: 1.0\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
)


def _utf8_charset() -> Charset:
    charset = Charset("utf-8")
    charset.body_encoding = QP  # readable in a raw dump, and 7-bit safe for any relay
    return charset


_UTF8 = _utf8_charset()


def _header_value(value: str) -> str:
    """ASCII verbatim (threading ids stay byte-identical); anything else RFC 2047 encoded."""
    return value if value.isascii() else Header(value, "utf-8").encode()


def build_message(email: OutboundEmail) -> Message:
    """Build the RFC 5322 message: From/To/Subject/Date, then ``headers`` as given.

    Uses the ``compat32`` classes on purpose: the modern header registry re-parses every
    address and id, which cost ~1 ms per message here, most of the sender's CPU budget.
    A missing ``Message-ID`` is generated so every message has one; the dispatcher
    normally sets it (SPEC §5.6) and then it is copied verbatim.
    """
    # typeshed says ``str``; the stdlib takes a Charset too, which is how QP is chosen.
    text = MIMEText(email.body_text, "plain", _UTF8)  # type: ignore[arg-type]
    message: Message
    if email.body_html is None:
        message = text
    else:
        message = MIMEMultipart("alternative")
        message.attach(text)
        message.attach(MIMEText(email.body_html, "html", _UTF8))  # type: ignore[arg-type]
    message["From"] = email.from_address
    message["To"] = email.recipient
    message["Subject"] = _header_value(email.subject)
    message["Date"] = formatdate(usegmt=True)
    for name, value in email.headers.items():
        message[name] = _header_value(value)
    if message["Message-ID"] is None:
        domain = email.from_address.rpartition("@")[2] or None
        message["Message-ID"] = make_msgid(domain=domain)
    return message


def render_message(email: OutboundEmail) -> tuple[bytes, str]:
    """The message as it goes on the wire and its ``Message-ID``, DKIM-signed when the
    From domain has a key (``streams.providers.dkim``, SPEC §13)."""
    raw, message_id = _render_unsigned(email)
    return dkim.sign(raw, email.from_address), message_id


def _render_unsigned(email: OutboundEmail) -> tuple[bytes, str]:
    """The message as it goes on the wire (CRLF line ends) and its ``Message-ID``.

    Byte for byte what ``build_message(email).as_bytes(policy=...)`` writes (a test compares
    them), but without building ``Message`` objects and folding every header through
    ``email.header``, which was most of the provider's CPU per message. It applies when
    every header line fits in 998 characters with a verbatim ASCII value, as threading ids,
    addresses and RFC 2047-encoded subjects do; any other email goes through
    ``build_message`` itself.
    """
    headers = [
        ("From", email.from_address),
        ("To", email.recipient),
        ("Subject", _header_value(email.subject)),
        ("Date", formatdate(usegmt=True)),
    ]
    headers.extend((name, _header_value(value)) for name, value in email.headers.items())
    message_id = next((v for n, v in headers if n.lower() == "message-id"), None)
    if message_id is None:
        domain = email.from_address.rpartition("@")[2] or None
        message_id = make_msgid(domain=domain)
        headers.append(("Message-ID", message_id))
    if not all(
        len(name) + 2 + len(value) <= _MAX_LINE and _VERBATIM_VALUE.match(value)
        for name, value in headers
    ):
        message = build_message(email)
        return message.as_bytes(policy=_WIRE), str(message["Message-ID"])
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
    text_headers, text_body = _text_part("plain", email.body_text)
    if email.body_html is None:  # the text part is the message: its headers come first
        return (text_headers + lines + "\r\n" + text_body).encode("ascii"), message_id
    text = text_headers + "\r\n" + text_body
    html = "\r\n".join(_text_part("html", email.body_html))
    boundary = _boundary(text + "\r\n" + html)
    top = f'Content-Type: multipart/alternative; boundary="{boundary}"\r\nMIME-Version: 1.0\r\n'
    parts = f"--{boundary}\r\n{text}\r\n--{boundary}\r\n{html}\r\n--{boundary}--\r\n"
    return (top + lines + "\r\n" + parts).encode("ascii"), message_id


def _text_part(subtype: str, content: str) -> tuple[str, str]:
    """A text part's headers and QP body, line ends as the compat32 generator writes them."""
    return _TEXT_PART.format(subtype), "\r\n".join(_LINE_ENDS.split(_UTF8.body_encode(content)))


def _boundary(text: str) -> str:
    """A multipart boundary in the email package's format that no line of ``text`` uses."""
    boundary = "=" * 15 + f"{random.randrange(sys.maxsize):019d}" + "=="
    candidate, counter = boundary, 0
    while re.search(f"^--{re.escape(candidate)}(--)?$", text, re.MULTILINE):
        candidate, counter = f"{boundary}.{counter}", counter + 1
    return candidate
