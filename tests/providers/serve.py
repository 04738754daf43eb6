"""Run one local API server in its own process (benchmarks: the server must not share the
client's GIL, as a real provider would not).

``python -m tests.providers.serve NAME`` prints one JSON line (``url`` and the server's
credentials, ``token_url`` / ``api_base`` where it has them), then serves until its stdin
closes. ``NAME``: gmail, microsoft365, mailgun, postmark, ses (moto's server mode).
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _describe(name: str) -> tuple[Any, dict[str, Any]]:
    if name == "gmail":
        from tests.providers.gmail_api import GmailApi

        gmail = GmailApi().start()
        assert isinstance(gmail, GmailApi)
        t = gmail.tokens
        return gmail, {
            "url": gmail.url,
            "token_url": gmail.token_url,
            "client_id": t.client_id,
            "client_secret": t.client_secret,
            "refresh_token": t.refresh_token,
        }
    if name == "microsoft365":
        from tests.providers.graph_api import GraphApi

        graph = GraphApi().start()
        assert isinstance(graph, GraphApi)
        t = graph.tokens
        return graph, {
            "url": graph.url,
            "token_url": graph.token_url,
            "api_base": graph.api_base,
            "tenant": graph.tenant,
            "client_id": t.client_id,
            "client_secret": t.client_secret,
            "refresh_token": t.refresh_token,
        }
    if name == "mailgun":
        from tests.providers.mailgun_api import MailgunApi

        mailgun = MailgunApi(domains=("mg.example.com",)).start()
        assert isinstance(mailgun, MailgunApi)
        return mailgun, {"url": mailgun.url, "api_key": mailgun.api_key, "domain": "mg.example.com"}
    if name == "postmark":
        from tests.providers.postmark_api import PostmarkApi

        postmark = PostmarkApi(senders=("example.com",)).start()
        assert isinstance(postmark, PostmarkApi)
        return postmark, {"url": postmark.url, "server_token": postmark.server_token}
    if name == "ses":
        from tests.providers.conftest import MotoSes

        moto = MotoSes()
        moto.verify_domain("example.com")
        return moto, {
            "url": moto.url,
            "region": moto.region,
            "access_key_id": moto.access_key_id,
            "secret_access_key": moto.secret_access_key,
        }
    raise SystemExit(f"unknown server {name!r}")


def main() -> None:
    server, description = _describe(sys.argv[1])
    print(json.dumps(description), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop()


if __name__ == "__main__":
    main()
