"""Flood control: a token bucket per client, with the time as a parameter.

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens a second; each
line costs one. A client may therefore send ``burst`` lines at once and then
``rate`` lines a second for as long as it likes. A ``rate`` of 0 turns the
limit off. No clock is read here, so tests drive it with made-up times.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TokenBucket"]

_EPSILON = 1e-9


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full.

    ``rate <= 0`` means unlimited: :meth:`take` always succeeds.
    """

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float | None = None

    def __post_init__(self) -> None:
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst}")
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens at time ``now`` if there are enough.

        Returns False (and spends nothing) when the client is over its limit.
        A clock that goes backwards refills nothing rather than raising.
        """
        if self.rate <= 0:
            return True
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        if self.stamp is None or now > self.stamp:
            self.stamp = now
        # A hair of slack, or float rounding (0.1 * 10 < 1) makes a steady
        # sender at exactly the rate lose a line now and then.
        if self.tokens + _EPSILON >= cost:
            self.tokens = max(0.0, self.tokens - cost)
            return True
        return False

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens will be there (0 if they already are)."""
        if self.rate <= 0 or self.tokens >= cost:
            return 0.0
        return (cost - self.tokens) / self.rate
