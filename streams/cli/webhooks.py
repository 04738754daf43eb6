"""``dripdrop webhooks serve``: the ESP event webhook receiver (``streams/webhooks/``)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from streams.settings import Settings

app = typer.Typer(
    help="ESP event webhooks (SES via SNS, Mailgun, Postmark) onto health-signals.",
    no_args_is_help=True,
)


@app.command("serve")
def serve(
    host: Annotated[
        str, typer.Option(envvar="DRIPDROP_WEBHOOKS_HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="DRIPDROP_WEBHOOKS_PORT", min=1, help="Port to listen on.")
    ] = 8081,
    sns_url_pattern: Annotated[
        str | None,
        typer.Option(
            envvar="DRIPDROP_WEBHOOKS_SNS_URL_PATTERN",
            help="Regex SigningCertURL and SubscribeURL must match "
            "(default: https on an sns.<region>.amazonaws.com host).",
        ),
    ] = None,
    max_age_seconds: Annotated[
        float,
        typer.Option(
            envvar="DRIPDROP_WEBHOOKS_MAX_AGE_SECONDS",
            min=1,
            help="Mailgun: refuse a signed timestamp further than this from now.",
        ),
    ] = 900.0,
) -> None:
    """Receive ESP event webhooks and put them on health-signals.

    POST /webhooks/{ses|mailgun|postmark}/{tenant_key}/{adapter_id}

    The adapter's config says how its requests are authenticated:

    * ses: webhook_topic_arn (SNS signature checked with AWS's certificate)

    * mailgun: webhook_secret (the webhook signing key, a secret reference)

    * postmark: webhook_username + webhook_secret (the Basic auth in the URL)

    Forged, unsigned or stale requests get 401 and produce nothing.
    Reference: docs/inbound.md.
    """
    from streams.webhooks import SNS_URL_PATTERN, WebhookOptions  # noqa: PLC0415
    from streams.webhooks import serve as run  # noqa: PLC0415 - only this command needs it

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True
    )
    options = WebhookOptions(
        host=host,
        port=port,
        sns_url_pattern=sns_url_pattern or SNS_URL_PATTERN,
        max_age_seconds=max_age_seconds,
    )
    run(Settings(), options)
