"""Sender throughput through each HTTP API provider vs a bare client of the same server (issue 12).

Run: ``.venv/bin/python -m benchmarks.provider_bench [--messages 400] [--runs 3]
[--providers gmail,microsoft365,ses,mailgun,postmark]``.

Each provider's local API server (``tests/providers/``; SES: moto's server mode) runs in
its own process (``python -m tests.providers.serve NAME``), as a real API would not share
the client's GIL. Per run, back to back against that one server: the bare client, the
sender, the bare client again; the run's bare figure is the mean of the two that bracket
the sender. Both sides send 8 at a time (the sender's default concurrency):

* bare: the provider's client library alone (httpx for the HTTP APIs, boto3 in 8 threads
  for SES) posting requests built before the clock starts, with an access token fetched
  before it too: the most the server can take from this machine;
* sender: ``Sender.deliver`` in the agent's batches of 64 with the ledger in PostgreSQL
  (claim → render → provider → outcome), the provider built by ``ProviderRegistry`` from an
  adapter config whose secrets are ``file:`` references (resolved per send), so its
  OAuth token grant happens inside the timing, once.

One untimed pass of each first warms the server process and the PostgreSQL pool.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool

from dripdrop_core.models import Adapter
from streams.providers import OutboundEmail, ProviderRegistry
from streams.providers.smtp import render_message
from streams.sender import DEFAULT_CONCURRENCY, Sender
from streams.settings import Settings
from tests.integration.ledger_rows import LedgerTenant

PROVIDERS = ("gmail", "microsoft365", "ses", "mailgun", "postmark")
FROM = "bench@example.com"
BATCH = 64


def start_server(name: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.providers.serve", name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def stop_server(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(15)


def sample_email(index: int) -> OutboundEmail:
    return OutboundEmail(
        from_address=FROM,
        recipient=f"prospect-{index}@example.test",
        subject=f"Hello {index}",
        body_text="Hi there,\nthis is step one.\n",
        headers={"Message-ID": f"<bench-{index}-{time.monotonic_ns()}@example.com>"},
    )


def adapter_config(name: str, server: dict[str, Any], secrets: Path) -> dict[str, Any]:
    """The adapter's config for ``server``, its secrets written to files and referenced."""

    def ref(key: str) -> dict[str, str]:
        path = secrets / f"{name}-{key}"
        path.write_text(str(server[key]))
        return {"secret": f"file:{path}"}

    if name in ("gmail", "microsoft365"):
        config = {
            "client_id": server["client_id"],
            "client_secret": ref("client_secret"),
            "refresh_token": ref("refresh_token"),
            "token_url": server["token_url"],
        }
        if name == "gmail":
            return {**config, "api_base": server["url"]}
        return {**config, "api_base": server["api_base"], "tenant": server["tenant"]}
    if name == "ses":
        return {
            "region": server["region"],
            "access_key_id": server["access_key_id"],
            "secret_access_key": ref("secret_access_key"),
            "endpoint_url": server["url"],
        }
    if name == "mailgun":
        return {"domain": server["domain"], "api_key": ref("api_key"), "api_base": server["url"]}
    return {"server_token": ref("server_token"), "api_base": server["url"]}


async def _token(server: dict[str, Any]) -> str:
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            server["token_url"],
            data={
                "grant_type": "refresh_token",
                "client_id": server["client_id"],
                "client_secret": server["client_secret"],
                "refresh_token": server["refresh_token"],
            },
        )
        answer.raise_for_status()
        return str(answer.json()["access_token"])


Request = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
"""One prepared API call: given the shared client, send it."""


def _post_json(url: str, body: dict[str, Any], headers: dict[str, str]) -> Request:
    def send(http: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return http.post(url, json=body, headers=headers)

    return send


def _post_content(url: str, content: bytes, headers: dict[str, str]) -> Request:
    def send(http: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return http.post(url, content=content, headers=headers)

    return send


def _post_mime(url: str, api_key: str, to: str, raw: bytes) -> Request:
    def send(http: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return http.post(
            url,
            auth=("api", api_key),
            data={"to": to},
            files={"message": ("message.mime", raw, "message/rfc822")},
        )

    return send


async def bare_http(name: str, server: dict[str, Any], messages: int) -> float:
    """messages/s of httpx alone: the provider's documented request, 8 in flight."""
    emails = [sample_email(i) for i in range(messages)]
    token = await _token(server) if name in ("gmail", "microsoft365") else ""
    requests: list[Request] = []
    for email in emails:
        raw, _ = render_message(email)
        if name == "gmail":
            body: dict[str, Any] = {"raw": base64.urlsafe_b64encode(raw).decode()}
            url = f"{server['url']}/gmail/v1/users/me/messages/send"
            auth = {"Authorization": f"Bearer {token}"}
            requests.append(_post_json(url, body, auth))
        elif name == "microsoft365":
            content = base64.b64encode(raw)
            url = f"{server['api_base']}/me/sendMail"
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
            requests.append(_post_content(url, content, headers))
        elif name == "mailgun":
            url = f"{server['url']}/v3/{server['domain']}/messages.mime"
            requests.append(_post_mime(url, server["api_key"], email.recipient, raw))
        else:
            body = {
                "From": email.from_address,
                "To": email.recipient,
                "Subject": email.subject,
                "TextBody": email.body_text,
                "Headers": [{"Name": "Message-ID", "Value": email.headers["Message-ID"]}],
                "MessageStream": "outbound",
            }
            headers = {
                "Accept": "application/json",
                "X-Postmark-Server-Token": server["server_token"],
            }
            url = f"{server['url']}/email"
            requests.append(_post_json(url, body, headers))
    queue: asyncio.Queue[Request] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    limits = httpx.Limits(max_connections=DEFAULT_CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:

        async def worker() -> None:
            while not queue.empty():
                answer = await queue.get_nowait()(http)
                assert answer.is_success, answer.status_code

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(DEFAULT_CONCURRENCY)))
        return messages / (time.perf_counter() - started)


def bare_boto3(server: dict[str, Any], messages: int) -> float:
    """messages/s of boto3 alone: ``SendEmail`` with raw content, 8 threads."""
    import boto3

    client = boto3.client(
        "sesv2",
        region_name=server["region"],
        endpoint_url=server["url"],
        aws_access_key_id=server["access_key_id"],
        aws_secret_access_key=server["secret_access_key"],
    )
    raws = [render_message(sample_email(i))[0] for i in range(messages)]

    def send(raw: bytes) -> None:
        client.send_email(
            FromEmailAddress=FROM,
            Destination={"ToAddresses": ["prospect@example.test"]},
            Content={"Raw": {"Data": raw}},
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(DEFAULT_CONCURRENCY) as pool:
        list(pool.map(send, raws))
    return messages / (time.perf_counter() - started)


async def bare(name: str, server: dict[str, Any], messages: int) -> float:
    if name == "ses":
        return await asyncio.to_thread(bare_boto3, server, messages)
    return await bare_http(name, server, messages)


async def sender_run(
    settings: Settings,
    pool: AsyncConnectionPool[Any],
    name: str,
    config: dict[str, Any],
    messages: int,
) -> float:
    """messages/s of the sender through the provider, ledger included, in the agent's batches."""
    tenant = LedgerTenant(settings.database_url, provider=name, config=config, from_address=FROM)
    commands = tenant.commands(messages)  # not timed: the stream sink inserts these
    adapter = Adapter(
        id=tenant.adapter_id,
        tenant_key=tenant.tenant_key,
        name="bench",
        provider=name,
        from_address=FROM,
        config=config,
    )
    registry = ProviderRegistry()  # a fresh provider: its token grant is inside the timing
    try:
        started = time.perf_counter()
        for start in range(0, messages, BATCH):
            batch = commands[start : start + BATCH]
            sender = Sender(pool, lambda _: registry.provider_for(adapter))
            outcome = await sender.deliver(batch)
            statuses = [r["status"] for r in outcome.results]
            assert statuses == ["sent"] * len(batch), outcome.results[:1]
        elapsed = time.perf_counter() - started
    finally:
        await registry.close()
    assert tenant.statuses() == {"sent": messages}
    return messages / elapsed


async def main(args: argparse.Namespace) -> None:
    settings = Settings()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.database_url, min_size=1, max_size=4, open=False
    )
    await pool.open(wait=True)
    n = args.messages
    summary: list[tuple[str, float, float]] = []
    try:
        with tempfile.TemporaryDirectory() as secrets:
            for name in args.providers.split(","):
                proc, server = start_server(name)
                try:
                    config = adapter_config(name, server, Path(secrets))
                    await bare(name, server, n)  # untimed warm-up of both paths
                    await sender_run(settings, pool, name, config, n)
                    bares, senders, ratios = [], [], []
                    for index in range(args.runs):
                        before = await bare(name, server, n)
                        sent = await sender_run(settings, pool, name, config, n)
                        after = await bare(name, server, n)
                        mean = (before + after) / 2
                        bares.append(mean)
                        senders.append(sent)
                        ratios.append(sent / mean)
                        print(
                            f"  {name} run {index + 1}: bare {before:5.0f}/s and {after:5.0f}/s,"
                            f" sender {sent:5.0f}/s, ratio {sent / mean:.2f}",
                            flush=True,
                        )
                    summary.append((name, statistics.median(bares), statistics.median(senders)))
                    print(f"  {name}: median per-run ratio {statistics.median(ratios):.2f}")
                finally:
                    stop_server(proc)
    finally:
        await pool.close()
    print(f"local API servers (subprocess), {n} messages per run, median of {args.runs} runs,")
    print(f"{DEFAULT_CONCURRENCY} in flight on both sides")
    print("  provider      bare client/s   sender/s   sender/bare")
    for name, bare_rate, sender_rate in summary:
        print(f"  {name:<13} {bare_rate:13.0f} {sender_rate:10.0f} {sender_rate / bare_rate:13.2f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
