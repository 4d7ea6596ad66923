"""Pacing of outgoing lines, so a client stays under the broker's flood control.

The broker refuses lines over its token bucket (``rate`` lines a second, bursts
of ``burst``; the welcome's ``limits``, docs/PROTOCOL.md §6). A client that
mirrors the bucket a little under those numbers never sees ``rate_limited``:
lines over the limit wait their turn instead of being refused. Time is a
parameter (any monotonic clock), so it is tested without waiting.
"""

from __future__ import annotations

__all__ = ["DEFAULT_RATE_MARGIN", "RateLimiter"]

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
