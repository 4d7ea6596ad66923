"""Engine URLs (broker/engine/url.py): every documented form, and clear errors."""

from __future__ import annotations

import pytest

from broker.engine import parse_url


def test_plain_and_tls_forms() -> None:
    u = parse_url("redis://127.0.0.1:6380/2")
    assert (u.scheme, u.db, u.display) == ("redis", 2, "redis://127.0.0.1:6380/2")
    assert parse_url("rediss://h").scheme == "rediss"
    assert parse_url("unix:///run/redis.sock").scheme == "unix"


def test_password_never_shown() -> None:
    assert parse_url("redis://user:pw@h:1/0").display == "redis://user:***@h:1/0"


def test_sentinel_form() -> None:
    u = parse_url("redis+sentinel://:pw@s1,s2:26380,[::1]:5000/chat/3")
    assert u.sentinels == (("s1", 26379), ("s2", 26380), ("::1", 5000))
    assert (u.service, u.db, u.password) == ("chat", 3, "pw")
    assert "pw" not in u.display


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h", "unknown scheme"),
        ("redis://", "no host"),
        ("redis://h/x", "database must be a number"),
        ("redis://h:99999", "port must be a number from 1 to 65535"),
        ("redis://h:abc/0", "port must be a number from 1 to 65535"),
        ("redis+sentinel://s1", "SERVICE"),
        ("redis+sentinel://s1:x/svc", "bad Sentinel address"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url(url)
