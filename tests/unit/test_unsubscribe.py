"""One-click unsubscribe tokens and headers (dripdrop_core.unsubscribe, RFC 8058)."""

from __future__ import annotations

import pytest

from dripdrop_core.unsubscribe import (
    ONE_CLICK,
    InvalidTokenError,
    Unsubscribe,
    list_unsubscribe_headers,
    make_token,
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
