"""``dripdrop webhooks serve``: ESP event webhooks onto ``health-signals`` (SPEC §8).

``POST /webhooks/{provider}/{tenant_key}/{adapter_id}`` with ``provider`` one of ``ses``
(Amazon SES through an SNS HTTP(S) subscription), ``mailgun`` or ``postmark``. The adapter
row (``dripdrop.channel_adapters``, read per request) must belong to the tenant and say
how its webhooks are authenticated, in its ``config``:

* ``ses``: ``webhook_topic_arn`` (one ARN or a list). The SNS message signature is
  verified against the signing certificate (SignatureVersion 1 = SHA1withRSA, 2 =
  SHA256withRSA, the canonical strings of AWS's "Verifying the signatures of Amazon SNS
  messages"); the certificate URL must match ``sns_url_pattern`` (https on an
  ``sns.<region>.amazonaws.com`` host by default) and fetched certificates are cached. A
  ``SubscriptionConfirmation`` is confirmed by GETting its ``SubscribeURL`` (same pattern),
  only once its signature is verified.
* ``mailgun``: ``webhook_secret``, the webhook signing key (a secret reference):
  ``signature.signature`` must be HMAC-SHA256(key, timestamp + token); a timestamp more
  than ``max_age_seconds`` away from now, or a token seen before, is refused.
* ``postmark``: ``webhook_username`` and ``webhook_secret`` (a reference to the password):
  the HTTP Basic credentials put in the webhook URL (``https://user:pass@host/...``).

Secrets are resolved per request (a rotated file needs no restart) and never logged. A
request that fails authentication is answered 401, a malformed one 400, an unknown
adapter 404; none produces anything. Each provider event becomes one ``delivery``,
``bounce`` (``hard``/``soft``), ``complaint`` or ``unsubscribe`` record naming the send by
``provider_message_id`` (and ``message_id`` when the event carries our RFC Message-ID),
with the provider's event id as ``event_id``; the worker resolves it to the step execution
(``streams.processor.health_signals.on_health_signal``). The answer is 200 only once Kafka has
acknowledged every record; 503 (Kafka, PostgreSQL or a secret unavailable) makes the
provider retry, and a retried event keeps its ``event_id``.

This package is the facade; the work is in private modules: ``_app`` (routing, statuses,
``serve``), ``_sns`` and ``_ses``, ``_mailgun``, ``_postmark`` (one per provider:
verification and parsing), ``_produce`` (Kafka), ``_adapters`` (PostgreSQL).
"""

from __future__ import annotations

from streams.webhooks._adapters import AdapterStore, PostgresAdapters
from streams.webhooks._adapters import WebhookAdapter as WebhookAdapter
from streams.webhooks._app import create_app, serve
from streams.webhooks._errors import MalformedError, UnauthorizedError
from streams.webhooks._errors import UnavailableError as UnavailableError
from streams.webhooks._mailgun import mailgun_signals, verify_mailgun
from streams.webhooks._options import PROVIDERS, SNS_URL_PATTERN, WebhookOptions
from streams.webhooks._postmark import postmark_signals, verify_basic_auth
from streams.webhooks._ses import ses_signals
from streams.webhooks._signal import Signal as Signal
from streams.webhooks._sns import SnsCertificates, sns_string_to_sign, verify_sns_signature

__all__ = [
    "PROVIDERS",
    "SNS_URL_PATTERN",
    "AdapterStore",
    "MalformedError",
    "PostgresAdapters",
    "SnsCertificates",
    "UnauthorizedError",
    "WebhookOptions",
    "create_app",
    "mailgun_signals",
    "postmark_signals",
    "serve",
    "ses_signals",
    "sns_string_to_sign",
    "verify_basic_auth",
    "verify_mailgun",
    "verify_sns_signature",
]
