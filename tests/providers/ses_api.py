"""A local SES v2 server for the errors moto's server mode does not produce.

moto (``ThreadedMotoServer``) is the SES the happy path and ``MessageRejected`` are tested
against; this server follows the SES v2 API reference for the rest:
https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html
(``POST /v2/email/outbound-emails``, JSON body with ``FromEmailAddress``,
``Destination.ToAddresses``, ``Content.Raw.Data`` base64; answers ``{"MessageId"}``; the
errors ``AccountSuspendedException`` 400, ``BadRequestException`` 400,
``LimitExceededException`` 400, ``MailFromDomainNotVerifiedException`` 400,
``MessageRejected`` 400, ``NotFoundException`` 404, ``SendingPausedException`` 400,
``TooManyRequestsException`` 429) in the REST-JSON error shape of AWS
(``x-amzn-ErrorType`` header and ``{"message"}`` body), plus 500 ``InternalFailure`` from
https://docs.aws.amazon.com/ses/latest/APIReference-V2/CommonErrors.html.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.providers.server import ApiServer


@dataclass(frozen=True)
class SesMessage:
    message_id: str
    raw: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.raw)


def ses_error(
    code: str, message: str, status: int = 400
) -> tuple[int, dict[str, str], dict[str, str]]:
    """``(status, body, headers)`` of an SES v2 error answer."""
    return status, {"message": message}, {"x-amzn-ErrorType": f"{code}:"}


class SesApi(ApiServer):
    """SES v2 ``SendEmail`` (any credentials: signatures are not checked here)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[SesMessage] = []

    def fail_with(self, code: str, message: str = "", status: int = 400, *, times: int = 1) -> None:
        status, body, headers = ses_error(code, message or code, status)
        self.fail_next(status, body, headers, times=times)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v2/email/outbound-emails", self._send, methods=["POST"])])

    async def _send(self, request: Request) -> Response:
        if not request.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 "):
            status, body, headers = ses_error(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
                403,
            )
            return JSONResponse(body, status, headers=headers)
        body = await request.json()
        planned = await self.planned()
        if planned is not None:
            return planned
        data = ((body.get("Content") or {}).get("Raw") or {}).get("Data")
        if not isinstance(data, str):
            status, err, headers = ses_error("BadRequestException", "Content is required")
            return JSONResponse(err, status, headers=headers)
        stored = SesMessage(f"0100{uuid.uuid4().hex}-000000", base64.b64decode(data))
        self.sent.append(stored)
        return JSONResponse({"MessageId": stored.message_id})
