"""One-click unsubscribe tokens and headers (dripdrop_core.unsubscribe, RFC 8058)."""

from __future__ import annotations

import pytest

from dripdrop_core.models import Mode, SequenceVersion
from dripdrop_core.unsubscribe import (
    ONE_CLICK,
    InvalidTokenError,
    OneClickLinks,
    Unsubscribe,
    is_one_click_on,
    list_unsubscribe_headers,
    make_token,
    one_click,
    read_token,
    unsubscribe_url,
)

KEY = b"k" * 32


def test_token_round_trips_what_it_binds() -> None:
    token = make_token(KEY, "acct|1", "e-1", "ann@example.org")
    assert read_token(KEY, token) == Unsubscribe("acct|1", "e-1", "ann@example.org")
    assert all(c.isalnum() or c in "-_." for c in token)  # safe in a URL path


@pytest.mark.parametrize(
    "token",
    [
        "",
        "nodot",
        "a.b.c",
        make_token(b"other", "t", "e", "r@x.org"),
        make_token(KEY, "t", "e", "r@x.org").replace(".", "x.", 1),
    ],
)
def test_forged_or_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidTokenError):
        read_token(KEY, token)


def test_a_payload_swapped_under_another_mac_is_refused() -> None:
    mine = make_token(KEY, "t1", "e1", "a@x.org")
    theirs = make_token(KEY, "t2", "e2", "b@x.org")
    with pytest.raises(InvalidTokenError, match="bad signature"):
        read_token(KEY, theirs.split(".")[0] + "." + mine.split(".")[1])


def test_headers_https_first_then_mailto_and_the_one_click_post() -> None:
    url = unsubscribe_url("https://u.example/", "tok")
    assert url == "https://u.example/u/tok"
    assert list_unsubscribe_headers(url, "unsub@example.com", "tok") == {
        "List-Unsubscribe": "<https://u.example/u/tok>,"
        " <mailto:unsub@example.com?subject=unsubscribe%20tok>",
        "List-Unsubscribe-Post": ONE_CLICK,
    }
    assert list_unsubscribe_headers(url, None, "tok")["List-Unsubscribe"] == f"<{url}>"


@pytest.mark.parametrize(
    ("mode", "setting", "on"),
    [
        (Mode.LIFECYCLE, None, True),
        (Mode.OUTBOUND, None, False),
        (Mode.LIFECYCLE, False, False),
        (Mode.OUTBOUND, True, True),
        (Mode.LIFECYCLE, True, True),
        (Mode.OUTBOUND, False, False),
    ],
)
def test_is_one_click_on_mode_default_unless_the_version_says(
    mode: Mode, setting: bool | None, on: bool
) -> None:
    version = SequenceVersion(
        id="v",
        sequence_id="s",
        tenant_key="t",
        version=1,
        mode=mode,
        pool_id="p" if mode is Mode.OUTBOUND else None,
        one_click_unsubscribe=setting,
    )
    assert is_one_click_on(version) is on


def test_one_click_link_and_headers_carry_a_token_bound_to_the_enrollment() -> None:
    links = OneClickLinks(key=KEY, base_url="https://u.example/", mailto="unsub@u.example")
    link = one_click(links, "t1", "e1", "ann@example.org")
    assert link.url.startswith("https://u.example/u/")
    token = link.url.rsplit("/", 1)[1]
    assert read_token(KEY, token) == Unsubscribe("t1", "e1", "ann@example.org")
    assert link.headers == list_unsubscribe_headers(link.url, "unsub@u.example", token)
    assert link.headers["List-Unsubscribe-Post"] == ONE_CLICK
    assert one_click(links, "t1", "e1", "ann@example.org") == link  # same link every send
