"""Pacing of outgoing lines, so a client stays under the broker's flood control.

The broker refuses lines over its token bucket (``rate`` lines a second, bursts
of ``burst``; the welcome's ``limits``, docs/PROTOCOL.md §6). A client that
mirrors the bucket a little under those numbers never sees ``rate_limited``:
lines over the limit wait their turn instead of being refused. Time is a
parameter (any monotonic clock), so it is tested without waiting.
"""

from __future__ import annotations

__all__ = ["DEFAULT_RATE_MARGIN", "BrokerBucket", "RateLimiter"]

#: Float slack, as the broker's bucket has (broker/ratelimit.py): 0.2 * 5 < 1.
_EPSILON = 1e-9

#: How far under the broker's numbers a client stays (clocks and networks jitter).
DEFAULT_RATE_MARGIN = 0.9


class RateLimiter:
    """A token bucket: ``rate`` lines per second, bursts of ``burst`` lines.

    Time is a parameter (any monotonic clock), so it is tested without waiting.
    A rate of 0 means no limit. ``margin`` scales both numbers down so the client
    stays under the broker's own bucket.
    """

    def __init__(
        self, rate: float = 0.0, burst: int = 0, *, margin: float = DEFAULT_RATE_MARGIN
    ) -> None:
        self.margin = margin
        self.rate = 0.0
        self.capacity = 1.0
        self._tokens = 1.0
        self._stamp: float | None = None
        self.configure(rate, burst)

    def configure(self, rate: float, burst: int) -> None:
        """Adopt new limits (a welcome, perhaps from a restarted broker)."""
        self.rate = max(0.0, rate) * self.margin
        # At least one line may always go; never more than the broker's burst - 1.
        self.capacity = float(max(1, min(int(burst * self.margin), burst - 1)))
        self._tokens = min(self._tokens, self.capacity)

    def reserve(self, now: float) -> float:
        """Take a token for one line; returns how long to wait before sending it.

        A line reserved with a wait keeps its place: the next caller waits longer.
        """
        if self.rate <= 0:
            return 0.0
        if self._stamp is None:
            self._tokens = self.capacity
        else:
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def penalize(self, now: float) -> None:
        """The broker refused a line for flooding: empty the bucket."""
        if self.rate > 0:
            self.reserve(now)
            self._tokens = min(self._tokens, 0.0)


class BrokerBucket:
    """The broker's own flood-control bucket, mirrored exactly (docs/PROTOCOL.md
    §6): ``rate`` tokens a second, ``burst`` at most, starting full.

    The session sends a flood-controlled request only when :meth:`take` says a
    token is there, so a client within the documented limit (``burst`` at once,
    then ``rate`` a second) never waits, and one beyond it waits its turn
    instead of being refused. Mirroring a margin under the broker's numbers
    (the old 90 %) made a sender at exactly ``rate`` queue without bound.
    Jitter on the way can still bunch lines so the broker refuses one; the
    session then empties this bucket (:meth:`penalize`) and sends it again.
    """

    def __init__(self, rate: float = 0.0, burst: int = 0) -> None:
        self.rate = 0.0
        self.burst = 1.0
        self.tokens = 1.0
        self._stamp: float | None = None
        self.configure(rate, burst)

    def configure(self, rate: float, burst: int) -> None:
        """Adopt the limits of a welcome (a restarted broker may have others)."""
        self.rate = max(0.0, rate)
        self.burst = float(max(1, burst))
        if self._stamp is None:
            self.tokens = self.burst
        self.tokens = min(self.tokens, self.burst)

    def _refill(self, now: float) -> None:
        if self._stamp is not None and now > self._stamp:
            self.tokens = min(self.burst, self.tokens + (now - self._stamp) * self.rate)
        if self._stamp is None or now > self._stamp:
            self._stamp = now

    def take(self, now: float) -> bool:
        """Spend a token at ``now`` if there is one."""
        if self.rate <= 0:
            return True
        self._refill(now)
        if self.tokens + _EPSILON >= 1.0:
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until a token is there (0: there is one)."""
        if self.rate <= 0:
            return 0.0
        self._refill(now)
        return max(0.0, (1.0 - _EPSILON - self.tokens) / self.rate)

    def refund(self) -> None:
        """A token taken for a request that never left: give it back."""
        if self.rate > 0:
            self.tokens = min(self.burst, self.tokens + 1.0)

    def penalize(self, now: float) -> None:
        """The broker refused a request for flooding: its bucket is empty."""
        self._refill(now)
        self.tokens = 0.0
