"""A local Microsoft Graph server: ``POST /me/sendMail`` and ``/users/{id}/sendMail`` (MIME).

Follows https://learn.microsoft.com/en-us/graph/api/user-sendmail ("Example 4: Send a new
message using MIME format": ``Content-Type: text/plain``, the MIME message base64 encoded
as the body; answers ``202 Accepted`` with no body) and
https://learn.microsoft.com/en-us/graph/outlook-send-mime-message (invalid base64 →
400 ``ErrorMimeContentInvalidBase64String``), the error format of
https://learn.microsoft.com/en-us/graph/errors (``{"error": {"code", "message",
"innerError"}}``; 401 ``InvalidAuthenticationToken`` for an expired token, 403
``ErrorAccessDenied``, 429 with ``Retry-After`` per
https://learn.microsoft.com/en-us/graph/throttling, 503 ``ServiceUnavailable``), and the
Microsoft identity platform's refresh-token grant at ``/{tenant}/oauth2/v2.0/token``
(https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-auth-code-flow#refresh-the-access-token).

The receiving side (the Graph pump, ``streams/pump/graph.py``): a mailbox per user whose
``Inbox`` gets mail with ``deliver`` (as Exchange's transport would), and

* subscriptions (https://learn.microsoft.com/graph/api/subscription-post-subscriptions,
  https://learn.microsoft.com/graph/change-notifications-delivery-webhooks): ``POST
  /subscriptions`` checks ``changeType``, ``resource`` (a mail folder's messages),
  ``expirationDateTime`` (at most 10,080 minutes ahead for Outlook messages, per
  https://learn.microsoft.com/graph/api/resources/subscription#subscription-lifetime) and
  ``clientState`` (at most 128 characters), then makes the validation request: ``POST
  {notificationUrl}?validationToken=…`` (and the same to ``lifecycleNotificationUrl``),
  which must answer 200 ``text/plain`` with the token, within 10 s, or the creation fails
  400 ``ValidationError``. ``PATCH /subscriptions/{id}`` renews (404 for one it does not
  know), ``DELETE`` removes. Plain ``http://127.0.0.1`` notification URLs are accepted
  (Graph itself requires HTTPS).
* change notifications: after ``deliver``, ``POST {notificationUrl}`` with ``{"value":
  [{"subscriptionId", "subscriptionExpirationDateTime", "changeType": "created",
  "resource", "resourceData": {"@odata.type", "@odata.id", "@odata.etag", "id"},
  "clientState", "tenantId"}]}``; ``lifecycle`` sends a lifecycle notification
  (``reauthorizationRequired``, ``missed``, ``subscriptionRemoved``;
  https://learn.microsoft.com/graph/change-notifications-lifecycle-events);
* delta (https://learn.microsoft.com/graph/delta-query-messages): ``GET
  /me/mailFolders('{folder}')/messages/delta`` with ``$select``, ``$filter=receivedDateTime
  ge …`` and ``Prefer: odata.maxpagesize``; pages with ``@odata.nextLink``, the last with
  ``@odata.deltaLink``; a state token ``expire_delta_tokens`` invalidated is answered
  **410 Gone** ``SyncStateNotFound`` (https://learn.microsoft.com/graph/delta-query-overview);
* list messages (https://learn.microsoft.com/graph/api/user-list-messages): ``GET
  /me/mailFolders('{folder}')/messages?$filter=internetMessageId eq '<id>'``, ``sentitems``
  (a well-known folder name) holding every message ``sendMail`` accepted;
* ``GET /me/messages/{id}/$value``: the message's MIME
  (https://learn.microsoft.com/graph/outlook-get-mime-message).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from typing import Any
from urllib.parse import quote, unquote

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.providers.server import ApiServer, TokenIssuer, token_endpoint


def graph_error(code: str, message: str) -> dict[str, Any]:
    """The body of a Graph error answer."""
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {"request-id": str(uuid.uuid4()), "date": "2026-12-03T00:00:00"},
        }
    }


@dataclass(frozen=True)
class GraphMessage:
    """One message Graph accepted, as the MIME it decoded."""

    user: str
    raw: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.raw)

    def header(self, name: str) -> str | None:
        value = self.message[name]
        return None if value is None else str(value)


@dataclass
class InboxMessage:
    """A message in a user's folder, with the change sequence delta tokens count."""

    id: str
    folder: str
    internet_message_id: str
    raw: bytes
    received: datetime
    seq: int


@dataclass
class Subscription:
    id: str
    user: str
    resource: str
    folder: str
    change_type: str
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires: datetime

    def json(self) -> dict[str, Any]:
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": "00000000-aaaa-bbbb-cccc-000000000001",
            "changeType": self.change_type,
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": _stamp(self.expires),
        }


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _parse(value: str) -> datetime | None:
    text = value.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits) :]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


MAX_MAIL_SUBSCRIPTION = timedelta(minutes=10080)


class GraphApi(ApiServer):
    """Graph's mail sending for the mailboxes of one app registration."""

    def __init__(
        self,
        *,
        tenant: str = "contoso.onmicrosoft.com",
        client_id: str = "00000000-aaaa-bbbb-cccc-000000000001",
        client_secret: str = "graph-client-secret",
        refresh_token: str = "M.R3_BAY.graph-refresh-token",
    ) -> None:
        super().__init__()
        self.tenant = tenant
        self.tokens = TokenIssuer(client_id, client_secret, refresh_token)
        self.sent: list[GraphMessage] = []
        self.messages: dict[str, list[InboxMessage]] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.subscription_posts = 0
        self.subscription_patches = 0
        self.delta_calls = 0
        self.notification_answers: list[int] = []
        self._seq = 0
        self._generation = 0
        self._mail_lock = threading.Lock()

    @property
    def token_url(self) -> str:
        return f"{self.url}/{self.tenant}/oauth2/v2.0/token"

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1.0"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
                Route("/v1.0/me/sendMail", self._send, methods=["POST"]),
                Route("/v1.0/users/{user_id}/sendMail", self._send, methods=["POST"]),
                Route("/v1.0/subscriptions", self._subscribe, methods=["POST"]),
                Route("/v1.0/subscriptions/{id}", self._subscription, methods=["PATCH", "DELETE"]),
                Route("/v1.0/me/mailFolders('{folder}')/messages/delta", self._delta),
                Route("/v1.0/users/{user_id}/mailFolders('{folder}')/messages/delta", self._delta),
                Route("/v1.0/me/mailFolders('{folder}')/messages", self._list),
                Route("/v1.0/users/{user_id}/mailFolders('{folder}')/messages", self._list),
                Route("/v1.0/me/messages/{id}/$value", self._value),
                Route("/v1.0/users/{user_id}/messages/{id}/$value", self._value),
            ]
        )

    # ------------------------------------------------------------ the mailbox

    def deliver(
        self, raw: bytes, user: str = "me", folder: str = "Inbox", *, notify: bool = True
    ) -> str:
        """Mail arrives in the user's folder; each subscription on it is notified before
        this returns (from the caller's thread; the answers are in ``notification_answers``).
        Returns the Graph message id."""
        message = message_from_bytes(raw)
        with self._mail_lock:
            self._seq += 1
            stored = InboxMessage(
                id="AAMkAD" + uuid.uuid4().hex + "=",
                folder=folder.lower(),
                internet_message_id=str(message["Message-ID"] or ""),
                raw=raw,
                received=datetime.now(UTC),
                seq=self._seq,
            )
            self.messages.setdefault(user, []).append(stored)
        for sub in list(self.subscriptions.values()) if notify else []:
            if sub.user == user and sub.folder == folder.lower() and "created" in sub.change_type:
                self.notify(sub, stored)
        return stored.id

    def notify(self, sub: Subscription, message: InboxMessage, **overrides: Any) -> int:
        """One change notification of ``message`` to the subscription's URL."""
        item = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": _stamp(sub.expires),
            "changeType": "created",
            "resource": f"Users/{sub.user}/Messages/{message.id}",
            "resourceData": {
                "@odata.type": "#Microsoft.Graph.Message",
                "@odata.id": f"Users/{sub.user}/Messages/{message.id}",
                "@odata.etag": 'W/"CQAAABYAAAA"',
                "id": message.id,
            },
            "clientState": sub.client_state,
            "tenantId": "00000000-0000-0000-0000-00000000cafe",
            **overrides,
        }
        return self._post(sub.notification_url, {"value": [item]})

    def lifecycle(self, subscription_id: str, event: str, **overrides: Any) -> int:
        """A lifecycle notification (``reauthorizationRequired``, ``missed``,
        ``subscriptionRemoved``) to the subscription's lifecycle URL."""
        sub = self.subscriptions[subscription_id]
        item = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": _stamp(sub.expires),
            "tenantId": "00000000-0000-0000-0000-00000000cafe",
            "clientState": sub.client_state,
            "lifecycleEvent": event,
            **overrides,
        }
        if event == "subscriptionRemoved":
            self.subscriptions.pop(subscription_id, None)
        return self._post(sub.lifecycle_url or sub.notification_url, {"value": [item]})

    def _post(self, url: str, body: dict[str, Any]) -> int:
        answer = httpx.post(url, json=body, timeout=30)
        self.notification_answers.append(answer.status_code)
        return answer.status_code

    def expire_delta_tokens(self) -> None:
        """Every delta and skip token issued so far is refused (410 Gone) from now on."""
        self._generation += 1

    def _authorized(self, request: Request) -> Response | None:
        if self.tokens.authorized(request.headers.get("authorization")):
            return None
        return JSONResponse(
            graph_error(
                "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired."
            ),
            401,
        )

    async def _subscribe(self, request: Request) -> Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        self.subscription_posts += 1
        body = await request.json()
        resource = str(body.get("resource", ""))
        folder = _folder_of(resource)
        expires = _parse(str(body.get("expirationDateTime", "")))
        now = datetime.now(UTC)
        problem = None
        if body.get("changeType") not in ("created", "updated", "deleted", "created,updated"):
            problem = "Invalid changeType."
        elif folder is None:
            problem = f"Resource '{resource}' is not supported."
        elif expires is None or expires <= now or expires > now + MAX_MAIL_SUBSCRIPTION:
            problem = "Subscription expiration can only be 10070 minutes in the future."
        elif len(str(body.get("clientState") or "")) > 128:
            problem = "clientState must be at most 128 characters."
        elif not str(body.get("notificationUrl", "")).startswith(("https://", "http://127.")):
            problem = "Subscription validation request failed. NotificationUrl must be https."
        if problem is not None:
            return JSONResponse(graph_error("InvalidRequest", problem), 400)
        urls = {str(body["notificationUrl"]), str(body.get("lifecycleNotificationUrl") or "")}
        for url in sorted(u for u in urls if u):
            if not await _validates(url):
                return JSONResponse(
                    graph_error(
                        "ValidationError",
                        "Subscription validation request failed. Notification endpoint must"
                        " respond with 200 OK to validation request.",
                    ),
                    400,
                )
        assert folder is not None and expires is not None
        user = "me" if resource.lower().startswith(("me/", "/me/")) else resource.split("/")[1]
        sub = Subscription(
            id=str(uuid.uuid4()),
            user=user,
            resource=resource,
            folder=folder,
            change_type=str(body["changeType"]),
            notification_url=str(body["notificationUrl"]),
            lifecycle_url=body.get("lifecycleNotificationUrl"),
            client_state=body.get("clientState"),
            expires=expires,
        )
        self.subscriptions[sub.id] = sub
        return JSONResponse(sub.json(), 201)

    async def _subscription(self, request: Request) -> Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        sub = self.subscriptions.get(request.path_params["id"])
        if sub is None:
            return JSONResponse(graph_error("ResourceNotFound", "The object was not found."), 404)
        if request.method == "DELETE":
            self.subscriptions.pop(sub.id)
            return Response(status_code=204)
        self.subscription_patches += 1
        body = await request.json()
        expires = _parse(str(body.get("expirationDateTime", "")))
        now = datetime.now(UTC)
        if expires is None or expires <= now or expires > now + MAX_MAIL_SUBSCRIPTION:
            return JSONResponse(graph_error("InvalidRequest", "Invalid expirationDateTime."), 400)
        sub.expires = expires
        return JSONResponse(sub.json())

    async def _delta(self, request: Request) -> Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        self.delta_calls += 1
        planned = await self.planned("delta")
        if planned is not None:
            return planned
        user = request.path_params.get("user_id", "me")
        folder = str(request.path_params["folder"]).lower()
        params = request.query_params
        token = params.get("$deltatoken") or params.get("$skiptoken")
        if token is not None:
            try:
                state = json.loads(base64.urlsafe_b64decode(token))
            except (binascii.Error, ValueError):
                state = {"generation": -1}
            if state.get("generation") != self._generation or state.get("folder") != folder:
                return JSONResponse(
                    graph_error("SyncStateNotFound", "The sync state generation is not found."),
                    410,
                )
        else:
            since = None
            flt = params.get("$filter")
            if flt:
                found = flt.replace("+", " ").split()
                if len(found) != 3 or found[:2] != ["receivedDateTime", "ge"]:
                    return JSONResponse(
                        graph_error("ErrorInvalidUrlQueryFilter", "Unsupported $filter."), 400
                    )
                when = _parse(found[2])
                if when is None:
                    return JSONResponse(graph_error("BadRequest", "Invalid date."), 400)
                since = when.isoformat()
            state = {
                "generation": self._generation,
                "folder": folder,
                "after": 0,
                "upto": self._seq,
                "since": since,
                "select": params.get("$select", ""),
                "initial": True,
            }
        size = 10
        prefer = request.headers.get("prefer", "")
        if "odata.maxpagesize=" in prefer:
            size = int(prefer.split("odata.maxpagesize=")[1].split(",")[0])
        since_at = datetime.fromisoformat(state["since"]) if state.get("since") else None
        if state.get("upto") is None:  # a delta token: everything after it, up to now
            state = {**state, "upto": self._seq, "offset": 0}
        matching = [
            m
            for m in self.messages.get(user, [])
            if m.folder == folder
            and state["after"] < m.seq <= state["upto"]
            and (since_at is None or m.received >= since_at)
        ]
        offset = int(state.get("offset", 0))
        page = matching[offset : offset + size]
        fields = [f for f in str(state.get("select", "")).split(",") if f]
        value = []
        for m in page:
            item: dict[str, Any] = {
                "@odata.type": "#microsoft.graph.message",
                "@odata.etag": 'W/"CQAAABYAAAA"',
                "id": m.id,
            }
            if not fields or "internetMessageId" in fields:
                item["internetMessageId"] = m.internet_message_id
            if not fields or "receivedDateTime" in fields:
                item["receivedDateTime"] = m.received.strftime("%Y-%m-%dT%H:%M:%SZ")
            value.append(item)
        base = str(request.url).split("?")[0]
        body: dict[str, Any] = {"@odata.context": f"{base}/$metadata", "value": value}
        if offset + size < len(matching):
            skip = {**state, "offset": offset + size}
            token_text = base64.urlsafe_b64encode(json.dumps(skip).encode()).decode()
            body["@odata.nextLink"] = f"{base}?$skiptoken={quote(token_text)}"
        else:
            delta = {
                "generation": self._generation,
                "folder": folder,
                "after": state["upto"],
                "upto": None,
                "since": state.get("since"),
                "select": state.get("select", ""),
            }
            token_text = base64.urlsafe_b64encode(json.dumps(delta).encode()).decode()
            body["@odata.deltaLink"] = f"{base}?$deltatoken={quote(token_text)}"
        return JSONResponse(body)

    async def _list(self, request: Request) -> Response:
        """List a folder's messages filtered on ``internetMessageId eq '<id>'`` (the only
        ``$filter`` supported here); ``sentitems`` holds what ``sendMail`` accepted, as
        Exchange saves a sent copy by default."""
        denied = self._authorized(request)
        if denied is not None:
            return denied
        user = request.path_params.get("user_id", "me")
        folder = str(request.path_params["folder"]).lower()
        found = re.fullmatch(
            r"internetMessageId eq '([^']*)'", request.query_params.get("$filter", "")
        )
        if found is None:
            return JSONResponse(
                graph_error("ErrorInvalidUrlQueryFilter", "Unsupported $filter."), 400
            )
        wanted = found.group(1)
        if folder == "sentitems":
            ids = [
                f"sent-{i}"
                for i, m in enumerate(self.sent)
                if m.user == user and m.header("Message-ID") == wanted
            ]
        else:
            ids = [
                m.id
                for m in self.messages.get(user, [])
                if m.folder == folder and m.internet_message_id == wanted
            ]
        return JSONResponse({"value": [{"id": i, "internetMessageId": wanted} for i in ids]})

    async def _value(self, request: Request) -> Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        user = request.path_params.get("user_id", "me")
        wanted = unquote(request.path_params["id"])
        found = next((m for m in self.messages.get(user, []) if m.id == wanted), None)
        if found is None:
            return JSONResponse(
                graph_error(
                    "ErrorItemNotFound", "The specified object was not found in the store."
                ),
                404,
            )
        return Response(found.raw, 200, media_type="text/plain")

    async def _token(self, request: Request) -> Response:
        if request.path_params["tenant"] != self.tenant:
            return JSONResponse({"error": "invalid_tenant"}, 400)
        return await token_endpoint(self.tokens, request)

    async def _send(self, request: Request) -> Response:
        if not self.tokens.authorized(request.headers.get("authorization")):
            return JSONResponse(
                graph_error(
                    "InvalidAuthenticationToken",
                    "Lifetime validation failed, the token is expired.",
                ),
                401,
            )
        body = await request.body()
        planned = await self.planned()
        if planned is not None:
            return planned
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "text/plain":
            return JSONResponse(
                graph_error("ErrorInvalidRequest", "Empty Payload. JSON content expected."), 400
            )
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return JSONResponse(
                graph_error(
                    "ErrorMimeContentInvalidBase64String",
                    "Invalid base64 string for MIME content.",
                ),
                400,
            )
        message = message_from_bytes(raw)
        if not message["To"] or "@" not in str(message["To"]):
            return JSONResponse(
                graph_error(
                    "ErrorInvalidRecipients",
                    "At least one recipient isn't valid., A message can't be sent because it"
                    " contains no recipients.",
                ),
                400,
            )
        self.sent.append(GraphMessage(request.path_params.get("user_id", "me"), raw))
        return Response(status_code=202)


def _folder_of(resource: str) -> str | None:
    """``me/mailFolders('Inbox')/messages`` → ``inbox`` (None: not a folder's messages)."""
    found = re.fullmatch(
        r"/?(me|users/[^/]+)/mail[Ff]olders\('([^']+)'\)/messages", resource.strip()
    )
    return found.group(2).lower() if found else None


async def _validates(url: str) -> bool:
    """Graph's validation request: the endpoint must echo the token (text/plain, 200, 10 s)."""
    token = (
        "Validation: Testing client application reachability for subscription"
        f" Request-Id: {uuid.uuid4()}"
    )
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(
                url, params={"validationToken": token}, headers={"Content-Type": "text/plain"}
            )
    except httpx.HTTPError:
        return False
    content_type = answer.headers.get("content-type", "").split(";")[0].strip()
    return answer.status_code == 200 and content_type == "text/plain" and answer.text == token
