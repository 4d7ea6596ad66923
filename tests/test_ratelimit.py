"""The token bucket of broker/ratelimit.py, with made-up times (no sleeping)."""

from __future__ import annotations

import pytest

from broker.ratelimit import TokenBucket


def test_burst_then_refused() -> None:
    bucket = TokenBucket(rate=5, burst=3)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_refills_at_rate() -> None:
    bucket = TokenBucket(rate=5, burst=3)
    for _ in range(3):
        assert bucket.take(0.0)
    assert not bucket.take(0.0)
    assert not bucket.take(0.1)  # half a token
    assert bucket.take(0.2)  # one token after 0.2 s at 5/s
    assert not bucket.take(0.2)


def test_sustained_rate_is_the_limit() -> None:
    bucket = TokenBucket(rate=10, burst=1)
    accepted = sum(bucket.take(i * 0.01) for i in range(1000))  # 100/s for 10 s
    assert 100 <= accepted <= 102


def test_never_saves_more_than_burst() -> None:
    bucket = TokenBucket(rate=100, burst=4)
    bucket.take(0.0)
    assert sum(bucket.take(3600.0) for _ in range(10)) == 4


def test_zero_rate_is_unlimited() -> None:
    bucket = TokenBucket(rate=0, burst=1)
    assert all(bucket.take(0.0) for _ in range(10_000))
    assert bucket.retry_after() == 0.0


def test_refused_take_spends_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=2)
    assert bucket.take(0.0, cost=2)
    assert not bucket.take(0.5)
    assert bucket.tokens == pytest.approx(0.5)
    assert bucket.take(1.0)


def test_clock_going_backwards_refills_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.5)
    assert bucket.take(11.0)


def test_retry_after() -> None:
    bucket = TokenBucket(rate=4, burst=1)
    assert bucket.retry_after() == 0.0
    bucket.take(0.0)
    assert bucket.retry_after() == pytest.approx(0.25)


def test_burst_below_one_is_rejected() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0)
