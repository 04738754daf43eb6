"""Inbound classification (SPEC §8): bounce, complaint, ooo, auto_reply or reply.

Pure: bytes or fields in, a ``Classification`` out. The rules are a table
(``RULES``) tried in order; the first that fires decides. Standards first (RFC 3464
delivery reports, RFC 5965 feedback reports, RFC 3834 ``Auto-Submitted``), then the
vendor headers and the subject/body phrases Gmail, Outlook/Exchange and common clients
write, in English, German, French, Spanish, Italian, Dutch and Portuguese. A message
that no rule claims is a ``reply``: the rules only ever take a message *away* from
reply-to-stop when a machine evidently wrote it.

Two entry points share the table: ``classify_mime`` (the pumps, which hold the raw
message) and ``classify_fields`` (a record a host produced without an intent, which
holds only headers, subject and bodies).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.parser import HeaderParser
from email.utils import getaddresses, parsedate_to_datetime

from dripdrop_core.correlation import Intent, normalize_message_id, split_references
from dripdrop_core.models import Frozen

MAX_BODY_CHARS = 100_000
"""Bodies are cut here: a record stays far below Kafka's message limit, and a
classifier needs the first screen of text, not an attachment's worth."""
MAX_HEADER_CHARS = 4_000
"""Per header value (a long ``Received`` chain is kept, a pathological one is cut)."""


class DsnRecipient(Frozen):
    """One per-recipient block of an RFC 3464 report (or what a heuristic found)."""

    action: str
    status: str
    recipient: str | None = None
    diagnostic: str | None = None


class MailView(Frozen):
    """What the rules look at, however the message arrived.

    Attributes:
        headers: Top-level headers, names lower-cased (repeats joined by newlines).
        report_type: ``report-type`` of a ``multipart/report``, lower-cased.
        dsn: Per-recipient blocks of a ``message/delivery-status`` part.
        feedback: Fields of a ``message/feedback-report`` part, names lower-cased.
        original_message_id: Message-ID of the message a report is about.
    """

    headers: dict[str, str]
    subject: str
    body_text: str
    report_type: str | None = None
    dsn: tuple[DsnRecipient, ...] = ()
    feedback: dict[str, str] | None = None
    original_message_id: str | None = None


class Classification(Frozen):
    """The intent and what the rule found (the record's ``intent_data``).

    ``data`` keys: ``rule`` always; bounce: ``bounce_type`` (hard/soft), ``status``,
    ``original_message_id``, ``recipient``; complaint: ``feedback_type``,
    ``original_message_id``; ooo: ``return_at`` (ISO date, first day back) when stated.
    """

    intent: Intent
    data: dict[str, str]


class ParsedMail(Frozen):
    """A raw message normalized into the ``inbound-messages`` fields (SPEC §8)."""

    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    from_: str
    to: str
    subject: str | None
    body_text: str | None
    body_html: str | None
    headers: dict[str, str]
    date: datetime | None


# ------------------------------------------------------------------ phrase tables

_REPLY_PREFIX = re.compile(
    r"^\s*(re|aw|antw|antwort|rv|r|ref|res|sv|vs|odp|fw|fwd|wg|tr)\s*(\[\d+\])?\s*:", re.I
)

# Outlook/Exchange prefix the subject of an Automatic Replies (OOF) message with these.
_OUTLOOK_OOF_PREFIXES = (
    "automatic reply",
    "automatische antwort",
    "réponse automatique",
    "respuesta automática",
    "risposta automatica",
    "automatisch antwoord",
    "resposta automática",
)

_OOO_PHRASES = (
    # en
    r"out of (the )?office",
    r"\booo\b",
    r"\boof\b",
    r"on (annual |parental |maternity |paternity |sick )?leave",
    r"on (vacation|holiday|holidays)",
    r"away from (the |my )?(office|desk|email)",
    r"(currently|presently) (out|away|travell?ing)",
    r"i (am|will be) (out|away|absent)",
    r"i'?m (out|away)",
    r"vacation (reply|response|responder)",
    r"limited access to (e-?mail|my email)",
    # de
    r"abwesenheit",
    r"nicht im büro",
    r"au(ß|ss)er haus",
    r"\burlaub",
    r"\babwesend\b",
    r"nicht erreichbar",
    # fr
    r"absen(ce|t|te) du bureau",
    r"hors du bureau",
    r"\ben congés?\b",
    r"\ben vacances\b",
    r"message d'absence",
    r"je suis absente?",
    # es
    r"fuera de (la )?oficina",
    r"de vacaciones",
    r"\bausente\b",
    r"respuesta de ausencia",
    r"estoy fuera",
    # it
    r"fuori (ufficio|sede)",
    r"\bin ferie\b",
    r"\bassente\b",
    r"non sono in ufficio",
    r"in vacanza",
    # nl
    r"\bafwezig",
    r"niet op kantoor",
    r"buiten kantoor",
    r"(met|op) vakantie",
    # pt
    r"fora do escrit[óo]rio",
    r"ausente do escrit[óo]rio",
    r"de f[ée]rias",
    r"\baus[êe]ncia\b",
    r"estou fora",
)
_OOO = re.compile("|".join(_OOO_PHRASES), re.I)

_AUTO_SUBJECT = re.compile(
    r"auto-?(matic)? ?(reply|response|responder|antwort|réponse|respuesta|risposta|antwoord"
    r"|resposta)|autoreply|autoresponder|automatische antwort|réponse automatique"
    r"|respuesta automática|risposta automatica|automatisch antwoord|resposta automática"
    r"|(we|i) (have )?received your (message|e-?mail|request)|thank you for (your )?contact"
    r"|ticket (received|created|#)|eingangsbestätigung|accusé de réception|acuse de recibo"
    r"|conferma di ricezione|ontvangstbevestiging|confirmação de recebimento",
    re.I,
)

_BOUNCE_SUBJECT = re.compile(
    r"undeliver(ed|able)|delivery (status notification|failure|has failed|failed)"
    r"|mail delivery (failed|failure|subsystem)|returned mail|failure notice"
    r"|non[- ]?remis|unzustellbar|nicht zustellbar|no se puede entregar|non recapitabile"
    r"|onbestelbaar|não entregue|mensagem não entregue",
    re.I,
)
_BOUNCE_SENDER = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon)@", re.I)
_ENHANCED_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_REPLY = re.compile(r"\b([45])\d\d[ :-]")
_TEMPORARY = re.compile(
    r"temporar|will (retry|continue trying|be retried)|delayed|deferred|try again later"
    r"|mailbox (is )?full|over quota",
    re.I,
)
_DELIVERED = re.compile(r"successfully delivered|was delivered|delivery (to .* )?succeeded", re.I)
_EMBEDDED_MESSAGE_ID = re.compile(r"^\s*Message-ID:\s*(<[^>\r\n]+>|\S+)", re.I | re.M)
_EMBEDDED_RECIPIENT = re.compile(
    r"^\s*(?:Final|Original)-Recipient:\s*(?:rfc822;)?\s*(\S+@\S+)", re.I | re.M
)

# ------------------------------------------------------------------ return dates

_MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    (
        "january jan januar jänner janvier enero gennaio januari janeiro",
        "february feb februar février fevrier febrero febbraio februari fevereiro",
        "march mar märz maerz mars marzo maart março marco",
        "april apr avril abril aprile",
        "may mai mayo maggio mei maio",
        "june jun juni juin junio giugno junho",
        "july jul juli juillet julio luglio julho",
        "august aug août aout agosto augustus",
        "september sep sept septembre septiembre setiembre settembre setembro",
        "october oct oktober octobre octubre ottobre outubro",
        "november nov novembre noviembre novembro",
        "december dec dezember décembre decembre diciembre dicembre dezembro",
    ),
    start=1,
):
    for _name in _names.split():
        _MONTHS[_name] = _number
_MONTH_RE = "|".join(sorted(map(re.escape, _MONTHS), key=len, reverse=True))

_WEEKDAYS: dict[str, int] = {}
for _number, _names in enumerate(
    (
        "monday montag lundi lunes lunedì lunedi maandag segunda-feira segunda",
        "tuesday dienstag mardi martes martedì martedi dinsdag terça-feira terça terca",
        "wednesday mittwoch mercredi miércoles miercoles mercoledì mercoledi woensdag"
        " quarta-feira quarta",
        "thursday donnerstag jeudi jueves giovedì giovedi donderdag quinta-feira quinta",
        "friday freitag vendredi viernes venerdì venerdi vrijdag sexta-feira sexta",
        "saturday samstag samedi sábado sabato zaterdag",
        "sunday sonntag dimanche domingo domenica zondag",
    )
):
    for _name in _names.split():
        _WEEKDAYS[_name] = _number
_WEEKDAY_RE = "|".join(sorted(map(re.escape, _WEEKDAYS), key=len, reverse=True))

_DATE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("iso", re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")),
    (
        "day_month",
        re.compile(
            r"\b(\d{1,2})(?:st|nd|rd|th|er|e|º|°|\.)?\s*(?:de\s+|of\s+)?"
            rf"({_MONTH_RE})\b\.?(?:,?\s*(?:de\s+)?(\d{{4}}))?",
            re.I,
        ),
    ),
    (
        "month_day",
        re.compile(
            rf"\b({_MONTH_RE})\b\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s*(\d{{4}}))?", re.I
        ),
    ),
    ("numeric", re.compile(r"\b(\d{1,2})[./](\d{1,2})(?:[./](\d{4}|\d{2}))?\b")),
    ("weekday", re.compile(rf"\b({_WEEKDAY_RE})\b", re.I)),
)

# (phrase, days to add to the date that follows it): "back on X" is the first day
# back; "until X" / "bis X" names the last day away, so the first day back is X + 1.
_RETURN_CUES: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(p, re.I), days)
    for p, days in (
        (
            r"\bback\b|\breturn(ing)?\b|\bin the office (on|from)\b|\bavailable (again )?(on|from)",
            0,
        ),
        (r"\b(until|till|through|thru)\b", 1),
        (r"zurück|wieder (im büro|erreichbar|da|verfügbar)|\bab dem\b|\bab\b", 0),
        (r"\bbis\b", 1),
        (r"de retour|\bretour\b|reviendrai|à partir du|a partir du|rentre", 0),
        (r"jusqu'?(au|à)|jusqu’(au|à)", 1),
        (r"de vuelta|regres|volver[ée]|a partir del", 0),
        (r"\bhasta\b", 1),
        (r"di ritorno|rientr|torner[òo]|a partire da", 0),
        (r"fino a|\bal\b", 1),
        (r"\bterug\b|weer (aanwezig|op kantoor|beschikbaar)|\bvanaf\b", 0),
        (r"tot en met|t/m|\btot\b", 1),
        (r"de volta|retorn|regresso|a partir d", 0),
        (r"\bat[ée]\b", 1),
    )
)
_CUE_WINDOW = 60
"""A date counts for a cue only when it starts within this many characters after it."""


def _resolve_year(day: int, month: int, year: int | None, received: date) -> date | None:
    try:
        if year is not None:
            return date(year + 2000 if year < 100 else year, month, day)
        found = date(received.year, month, day)
    except ValueError:
        return None
    return found if found >= received - timedelta(days=30) else _next_year(found)


def _next_year(d: date) -> date | None:
    try:
        return d.replace(year=d.year + 1)
    except ValueError:  # 29 February
        return None


def _dates_in(text: str, received: date) -> list[tuple[int, date]]:
    """Every date the text states, with its position; relative weekdays resolved."""
    found: list[tuple[int, date]] = []
    taken: list[range] = []
    for kind, pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            if any(m.start() in span for span in taken):
                continue
            g = m.groups()
            value: date | None
            if kind == "iso":
                value = _resolve_year(int(g[2]), int(g[1]), int(g[0]), received)
            elif kind == "day_month":
                value = _resolve_year(int(g[0]), _MONTHS[g[1].lower()], _int(g[2]), received)
            elif kind == "month_day":
                value = _resolve_year(int(g[1]), _MONTHS[g[0].lower()], _int(g[2]), received)
            elif kind == "numeric":
                value = _numeric(int(g[0]), int(g[1]), _int(g[2]), received)
            else:
                ahead = (_WEEKDAYS[g[0].lower()] - received.weekday()) % 7 or 7
                value = received + timedelta(days=ahead)
            if value is None:
                continue
            if kind == "weekday" and any(m.end() <= pos <= m.end() + 3 for pos, _ in found):
                continue  # "Monday 30 March": the date says it, the weekday only repeats it
            found.append((m.start(), value))
            taken.append(range(m.start(), m.end()))
    return sorted(found)


def _int(raw: str | None) -> int | None:
    return int(raw) if raw else None


def _numeric(a: int, b: int, year: int | None, received: date) -> date | None:
    """``a/b``: day-first (Europe) or month-first (US); the reading nearest after
    ``received`` wins, so ``3/10`` received on 1 March is the 10th, in October the 3rd."""
    options = (_resolve_year(a, b, year, received), _resolve_year(b, a, year, received))
    valid = [d for d in options if d is not None and d >= received - timedelta(days=1)]
    return min(valid) if valid else None


def parse_return_date(text: str, received: date) -> date | None:
    """Return the first day back an out-of-office text states, or ``None``.

    A date right after a return cue wins: "back on", "zurück am", "de retour le", …
    first (the first day back), else "until", "bis", "jusqu'au", … (the last day away,
    so one day is added). Otherwise the latest stated date is taken as the last day away. Years left
    out are the next occurrence; anything before ``received`` or over a year ahead is
    ignored (a signature's date, a quoted message).
    """
    dates = [
        (pos, d)
        for pos, d in _dates_in(text, received)
        if received - timedelta(days=1) <= d <= received + timedelta(days=366)
    ]
    if not dates:
        return None
    best: tuple[int, int, date] | None = None  # (cue kind: back before until, position, day)
    for cue, extra in _RETURN_CUES:
        for m in cue.finditer(text):
            after = [d for pos, d in dates if m.end() <= pos <= m.end() + _CUE_WINDOW]
            if after:
                candidate = (extra, m.end(), after[0] + timedelta(days=extra))
                if best is None or candidate[:2] < best[:2]:
                    best = candidate
    if best is not None:
        return max(best[2], received)
    return max(max(d for _, d in dates) + timedelta(days=1), received)


# ------------------------------------------------------------------ views


def _text_of(part: Message) -> str:
    try:
        payload = part.get_content() if isinstance(part, EmailMessage) else part.get_payload()
    except (LookupError, ValueError, AssertionError):  # unknown charset, broken encoding
        raw = part.get_payload(decode=True)
        payload = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
    return payload if isinstance(payload, str) else ""


def _html_to_text(markup: str) -> str:
    no_blocks = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", markup)
    return html.unescape(re.sub(r"(?s)<[^>]+>", " ", no_blocks))


def _headers(msg: Message) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in msg.items():
        key = name.lower()
        text = str(value)[:MAX_HEADER_CHARS]
        out[key] = f"{out[key]}\n{text}" if key in out else text
    return out


def _field_blocks(part: Message) -> list[Message]:
    """The field blocks of a ``message/delivery-status`` (or feedback) part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    return [HeaderParser().parsestr(block) for block in re.split(r"\r?\n\s*\r?\n", text)]


def _original_id(part: Message) -> str | None:
    ctype = part.get_content_type()
    if ctype == "message/rfc822":
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            return normalize_message_id(inner[0].get("Message-ID"))
    if ctype in ("text/rfc822-headers", "text/rfc822-header"):
        return normalize_message_id(HeaderParser().parsestr(_text_of(part)).get("Message-ID"))
    return None


def _addr(raw: str | None) -> str | None:
    if not raw:
        return None
    value = raw.split(";", 1)[-1].strip()
    return value or None


def _walk_outer(msg: Message) -> Iterator[Message]:
    """Every part, depth first, without descending into an attached message (a
    bounce's or complaint's copy of our own send must not be read as its text)."""
    yield msg
    payload = msg.get_payload()
    if msg.get_content_maintype() == "multipart" and isinstance(payload, list):
        for part in payload:
            if isinstance(part, Message):
                yield from _walk_outer(part)


def view_from_mime(raw: bytes) -> MailView:
    """Read a raw RFC 5322 message (any MIME structure) into a ``MailView``."""
    msg = message_from_bytes(raw, policy=policy.default)
    texts: list[str] = []
    dsn: list[DsnRecipient] = []
    feedback: dict[str, str] | None = None
    original: str | None = None
    for part in _walk_outer(msg):
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            for block in _field_blocks(part)[1:]:
                if block.get("Action") or block.get("Status"):
                    dsn.append(
                        DsnRecipient(
                            action=str(block.get("Action") or "").strip().lower(),
                            status=str(block.get("Status") or "").strip(),
                            recipient=_addr(
                                block.get("Final-Recipient") or block.get("Original-Recipient")
                            ),
                            diagnostic=(str(block.get("Diagnostic-Code") or "") or None),
                        )
                    )
        elif ctype == "message/feedback-report":
            blocks = _field_blocks(part)
            feedback = _headers(blocks[0]) if blocks else {}
        elif ctype in ("message/rfc822", "text/rfc822-headers", "text/rfc822-header"):
            original = original or _original_id(part)
        elif ctype == "text/plain" and part.get_content_disposition() != "attachment":
            texts.append(_text_of(part))
        elif ctype == "text/html" and part.get_content_disposition() != "attachment" and not texts:
            texts.append(_html_to_text(_text_of(part)))
    if original is None and (dsn or feedback is not None):
        found = _EMBEDDED_MESSAGE_ID.search("\n".join(texts))
        original = normalize_message_id(found.group(1)) if found else None
    report_type = (
        msg.get_param("report-type") if msg.get_content_type() == "multipart/report" else None
    )
    return MailView(
        headers=_headers(msg),
        subject=str(msg.get("Subject") or ""),
        body_text="\n".join(texts)[:MAX_BODY_CHARS],
        report_type=str(report_type).lower() if isinstance(report_type, str) else None,
        dsn=tuple(dsn),
        feedback=feedback,
        original_message_id=original,
    )


def view_from_fields(
    headers: Mapping[str, str],
    subject: str | None,
    body_text: str | None,
    body_html: str | None = None,
) -> MailView:
    """A ``MailView`` from a record's fields (no MIME tree: reports are read from text)."""
    lowered = {k.lower(): str(v) for k, v in headers.items()}
    text = body_text or (_html_to_text(body_html) if body_html else "")
    ctype = lowered.get("content-type", "").lower()
    report = re.search(r"report-type\s*=\s*\"?([\w-]+)", ctype)
    found = _EMBEDDED_MESSAGE_ID.search(text)
    return MailView(
        headers=lowered,
        subject=subject or "",
        body_text=text[:MAX_BODY_CHARS],
        report_type=report.group(1) if report and "multipart/report" in ctype else None,
        original_message_id=normalize_message_id(found.group(1)) if found else None,
    )


# ------------------------------------------------------------------ rules

Rule = Callable[[MailView, date], Classification | None]


def _bounce(view: MailView, recipients: Iterable[DsnRecipient], rule: str) -> Classification:
    failed = [r for r in recipients if r.action in ("failed", "delayed")]
    hard = [r for r in failed if r.status.startswith("5") and r.action == "failed"]
    chosen = (hard or failed)[0]
    data = {
        "rule": rule,
        "bounce_type": "hard" if hard else "soft",
        "status": chosen.status,
    }
    if chosen.recipient:
        data["recipient"] = chosen.recipient
    if view.original_message_id:
        data["original_message_id"] = view.original_message_id
    return Classification(intent=Intent.BOUNCE, data=data)


def rule_dsn(view: MailView, received: date) -> Classification | None:
    """RFC 3464: a ``message/delivery-status`` part; ``failed`` + 5.x.x is hard,
    4.x.x or ``delayed`` soft; ``delivered``/``relayed``/``expanded`` is not a bounce."""
    if not view.dsn:
        if view.report_type != "delivery-status":
            return None
        status = _ENHANCED_STATUS.search(view.body_text)
        if status is not None:
            code = status.group(0)
        elif _DELIVERED.search(view.body_text):
            code = "2.0.0"
        else:
            code = "4.0.0" if _TEMPORARY.search(view.body_text) else "5.0.0"
        if code.startswith("2"):
            return Classification(intent=Intent.AUTO_REPLY, data={"rule": "rfc3464_success"})
        recipient = _EMBEDDED_RECIPIENT.search(view.body_text)
        action = "delayed" if code.startswith("4") else "failed"
        block = DsnRecipient(
            action=action, status=code, recipient=recipient.group(1) if recipient else None
        )
        return _bounce(view, [block], "rfc3464")
    if not any(r.action in ("failed", "delayed") for r in view.dsn):
        return Classification(intent=Intent.AUTO_REPLY, data={"rule": "rfc3464_success"})
    return _bounce(view, view.dsn, "rfc3464")


def rule_arf(view: MailView, received: date) -> Classification | None:
    """RFC 5965: a ``message/feedback-report`` part (or a feedback-report report)."""
    if view.feedback is None and view.report_type != "feedback-report":
        return None
    data = {"rule": "rfc5965"}
    feedback_type = (view.feedback or {}).get("feedback-type")
    if feedback_type:
        data["feedback_type"] = feedback_type.strip().lower()
    if view.original_message_id:
        data["original_message_id"] = view.original_message_id
    return Classification(intent=Intent.COMPLAINT, data=data)


def _from_address(view: MailView) -> str:
    pairs = getaddresses([view.headers.get("from", "")])
    return pairs[0][1] if pairs else ""


def rule_bounce_heuristic(view: MailView, received: date) -> Classification | None:
    """Non-standard bounces (Exim, qmail, old Exchange): a mailer-daemon sender or a
    bounce subject, plus an SMTP status in the text; temporary wording makes it soft."""
    machine = (
        bool(_BOUNCE_SENDER.match(_from_address(view))) or "x-failed-recipients" in view.headers
    )
    if not (machine or _BOUNCE_SUBJECT.search(view.subject)):
        return None
    if _REPLY_PREFIX.match(view.subject) and not machine:
        return None
    text = view.body_text
    status = _ENHANCED_STATUS.search(text)
    smtp = _SMTP_REPLY.search(text)
    if status is None and smtp is None and not machine:
        return None
    if status is not None:
        code = status.group(0)
    elif smtp is not None:
        code = f"{smtp.group(1)}.0.0"
    else:
        code = "4.0.0" if _TEMPORARY.search(text) else "5.0.0"
    if code.startswith("2"):
        return None
    if code.startswith("5") and _TEMPORARY.search(text) and status is None:
        code = "4.0.0"
    original = view.original_message_id
    if original is None:
        embedded = _EMBEDDED_MESSAGE_ID.search(text)
        original = normalize_message_id(embedded.group(1)) if embedded else None
    view = view.model_copy(update={"original_message_id": original})
    recipient = view.headers.get("x-failed-recipients") or None
    if recipient is None:
        found = _EMBEDDED_RECIPIENT.search(text)
        recipient = found.group(1) if found else None
    block = DsnRecipient(
        action="failed" if code.startswith("5") else "delayed",
        status=code,
        recipient=recipient.strip() if recipient else None,
    )
    return _bounce(view, [block], "bounce_heuristic")


def _auto_evidence(view: MailView) -> str | None:
    """The header (RFC 3834 or vendor) that marks the message as machine-sent."""
    h = view.headers
    submitted = h.get("auto-submitted", "").strip().lower()
    if submitted and not submitted.startswith("no"):
        return "auto_submitted"
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder", "x-auto-response-suppress"):
        if h.get(name, "").strip():
            return name.replace("-", "_")
    precedence = (h.get("precedence", "") or h.get("x-precedence", "")).strip().lower()
    if precedence in ("auto_reply", "bulk", "junk"):
        return "precedence"
    if "x-ms-exchange-inbox-rules-loop" in h or "x-ms-exchange-generated-message-source" in h:
        return "exchange_generated"
    return None


def _ooo(view: MailView, received: date, rule: str) -> Classification:
    data = {"rule": rule}
    back = parse_return_date(f"{view.subject}\n{view.body_text[:4000]}", received)
    if back is not None:
        data["return_at"] = back.isoformat()
    return Classification(intent=Intent.OOO, data=data)


def rule_outlook_oof(view: MailView, received: date) -> Classification | None:
    """Exchange's Automatic Replies (OOF) prefix the subject in the mailbox language."""
    subject = view.subject.strip().lower()
    if any(re.match(rf"{p}\s*:", subject) for p in _OUTLOOK_OOF_PREFIXES):
        return _ooo(view, received, "outlook_oof")
    return None


def rule_ooo_subject(view: MailView, received: date) -> Classification | None:
    """An out-of-office subject that is not a reply's ``Re:`` subject."""
    if _REPLY_PREFIX.match(view.subject) or not _OOO.search(view.subject):
        return None
    return _ooo(view, received, "ooo_subject")


def rule_ooo_auto(view: MailView, received: date) -> Classification | None:
    """A machine-sent message (RFC 3834 / vendor header) whose text says out-of-office."""
    evidence = _auto_evidence(view)
    if evidence is None or not _OOO.search(f"{view.subject}\n{view.body_text[:4000]}"):
        return None
    return _ooo(view, received, f"ooo_{evidence}")


def rule_auto_reply(view: MailView, received: date) -> Classification | None:
    """Any other machine-sent message, or an auto-reply subject ("ticket received")."""
    evidence = _auto_evidence(view)
    if evidence is not None:
        return Classification(intent=Intent.AUTO_REPLY, data={"rule": evidence})
    if not _REPLY_PREFIX.match(view.subject) and _AUTO_SUBJECT.search(view.subject):
        return Classification(intent=Intent.AUTO_REPLY, data={"rule": "auto_subject"})
    return None


RULES: tuple[tuple[str, Rule], ...] = (
    ("rfc3464", rule_dsn),
    ("rfc5965", rule_arf),
    ("bounce_heuristic", rule_bounce_heuristic),
    ("outlook_oof", rule_outlook_oof),
    ("ooo_subject", rule_ooo_subject),
    ("ooo_auto", rule_ooo_auto),
    ("auto_reply", rule_auto_reply),
)
"""Tried in order; the first rule that returns a classification decides."""


def classify(view: MailView, *, received: date) -> Classification:
    """Return the intent of a message: the first rule that fires, else ``reply``.

    ``received`` (the mailbox's date of the message) anchors return dates stated
    without a year or as a weekday.
    """
    for _name, rule in RULES:
        found = rule(view, received)
        if found is not None:
            return found
    return Classification(intent=Intent.REPLY, data={"rule": "default"})


def classify_mime(raw: bytes, *, received: date) -> Classification:
    """Classify a raw message (what the pumps hold)."""
    return classify(view_from_mime(raw), received=received)


def classify_fields(
    headers: Mapping[str, str],
    subject: str | None,
    body_text: str | None,
    body_html: str | None = None,
    *,
    received: date,
) -> Classification:
    """Classify an ``inbound-messages`` record that came without an intent."""
    return classify(view_from_fields(headers, subject, body_text, body_html), received=received)


def parse_mail(raw: bytes) -> ParsedMail:
    """Normalize a raw message into the ``inbound-messages`` fields (SPEC §8): ids
    without angle brackets, References oldest first, header names lower-cased."""
    msg = message_from_bytes(raw, policy=policy.default)
    text = html_body = None
    try:
        plain = msg.get_body(preferencelist=("plain",))
        rich = msg.get_body(preferencelist=("html",))
    except (KeyError, ValueError):  # a broken MIME tree: headers are still worth a record
        plain = rich = None
    if plain is not None:
        text = _text_of(plain)[:MAX_BODY_CHARS]
    if rich is not None:
        html_body = _text_of(rich)[:MAX_BODY_CHARS]
    if text is None and html_body is None and not msg.is_multipart():
        text = _text_of(msg)[:MAX_BODY_CHARS]
    if msg.get_content_type() == "multipart/report":
        text = _report_text(msg)[:MAX_BODY_CHARS]
    when: datetime | None
    try:
        when = parsedate_to_datetime(str(msg["Date"])) if msg["Date"] else None
    except (TypeError, ValueError):
        when = None
    if when is not None and when.tzinfo is None:
        when = None
    return ParsedMail(
        message_id=normalize_message_id(str(msg.get("Message-ID") or "")),
        in_reply_to=normalize_message_id(
            next(iter(split_references(str(msg.get("In-Reply-To") or ""))), None)
        ),
        references=split_references(str(msg.get("References") or "")),
        from_=_first_address(msg.get("From")),
        to=_first_address(msg.get("To")),
        subject=str(msg["Subject"]) if msg["Subject"] is not None else None,
        body_text=text,
        body_html=html_body,
        headers=_headers(msg),
        date=when,
    )


def _report_text(msg: Message) -> str:
    """A report's text with its machine parts (status fields, the reported message's
    headers), so a record built from it still shows the status and our Message-ID."""
    chunks: list[str] = []
    for part in _walk_outer(msg):
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/feedback-report"):
            chunks.extend(block.as_string().strip() for block in _field_blocks(part))
        elif ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                chunks.append("\n".join(f"{k}: {v}" for k, v in inner[0].items()))
        elif ctype in ("text/plain", "text/rfc822-headers", "text/rfc822-header"):
            chunks.append(_text_of(part).strip())
    return "\n\n".join(c for c in chunks if c)


def _first_address(value: object) -> str:
    pairs = getaddresses([str(value or "")])
    return next((addr for _, addr in pairs if addr), str(value or "").strip())
