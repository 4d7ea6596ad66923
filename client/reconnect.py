"""When to say ``hello`` again after losing the broker (docs/PROTOCOL.md §5.3).

Tries follow ``BACKOFF``, each delay scaled by a random factor in [0.5, 1.5)
so that the clients of a restarted broker do not all arrive in the same
millisecond. After a ``shutdown`` notice the first try waits a moment
(``AFTER_SHUTDOWN``, jittered too): a hello sent at once could reach the
broker that is closing and be lost. Time is a parameter, and so is the
randomness, so the schedule is tested without waiting.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["AFTER_SHUTDOWN", "AFTER_UNAVAILABLE", "BACKOFF", "Retry"]

#: Delays between tries, in seconds, one per try, the last repeated.
BACKOFF = (0.25, 0.5, 1.0, 2.0, 4.0)
#: The first try after a ``shutdown`` notice.
AFTER_SHUTDOWN = 0.2
#: Seconds before the next try after a broker refused ``hello`` as
#: ``unavailable`` (it cannot reach its cluster engine now): it is alive, so
#: the back-off does not grow past this (jittered too).
AFTER_UNAVAILABLE = 1.0


class Retry:
    """The schedule of ``hello`` tries while reconnecting."""

    def __init__(self, jitter: Callable[[], float] = random.random) -> None:
        self.jitter = jitter
        #: Tries made since the connection was lost (0: none yet).
        self.attempt = 0
        self.at = 0.0

    def start(self, now: float, *, shutdown: bool = False) -> None:
        """The broker is lost (``shutdown``: it said it is going)."""
        self.attempt = 0
        self.at = now + (AFTER_SHUTDOWN * self._factor() if shutdown else 0.0)

    def due(self, now: float) -> int:
        """0 if no try is due at ``now``; else the try's number (1: the first,
        which starts with fresh sockets), and the next is scheduled."""
        if now < self.at:
            return 0
        self.attempt += 1
        self.at = now + BACKOFF[min(self.attempt - 1, len(BACKOFF) - 1)] * self._factor()
        return self.attempt

    def unavailable(self, now: float) -> None:
        """The broker answered but cannot take us now: the next try comes
        within ``AFTER_UNAVAILABLE``, however long the back-off has grown."""
        self.at = min(self.at, now + AFTER_UNAVAILABLE * self._factor())

    def welcomed(self, now: float, wait: float) -> None:
        """A welcome came: the joins follow at the sync; start over if they
        have not come within ``wait`` seconds."""
        self.attempt = 0
        self.at = now + wait

    def _factor(self) -> float:
        return 0.5 + self.jitter()
