"""Fail fast while the engine is out of reach (docs/CLUSTER.md "Errors").

The broker calls the engine from its one loop, and a stalled Redis makes each
call wait for the full timeout. Without a breaker a turn with several engine
calls (lines, a join, the heartbeat) could stall the loop long enough for
clients to time out, though they did nothing wrong. After a call failed with
:class:`EngineUnavailable`, :class:`Breaker` refuses every call at once, with
the same retryable error, for ``cooldown`` seconds; the first call after that
tries Redis again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from broker.engine.api import EngineUnavailable

__all__ = ["Breaker"]

_T = TypeVar("_T")

#: Methods that do not ask Redis for anything: never refused.
_LOCAL = frozenset({"close", "renew_id", "saw"})


class Breaker:
    """Wraps an engine: the same methods, failing fast for a while after one
    was unavailable. Attributes that are not methods pass through."""

    def __init__(
        self, engine: object, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._engine = engine
        self._cooldown = cooldown
        self._clock = clock
        self._open_until = 0.0
        self._reason = ""

    @property
    def is_open(self) -> bool:
        """Whether calls are refused without trying now."""
        return self._clock() < self._open_until

    def __getattr__(self, name: str) -> Any:
        return self._guarded(self._engine, name)

    def also(self, other: _T) -> _T:
        """``other`` (the engine's topics, say) behind this same breaker: a
        call of either that found Redis unavailable fails both fast."""
        return cast(_T, _Also(self, other))

    def _guarded(self, target: object, name: str) -> Any:
        attr = getattr(target, name)
        if not callable(attr) or name in _LOCAL:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._clock() < self._open_until:
                raise EngineUnavailable(self._reason)
            try:
                return attr(*args, **kwargs)
            except EngineUnavailable as exc:
                self._open_until = self._clock() + self._cooldown
                self._reason = f"{exc} (not tried again for {self._cooldown:g} s)"
                raise

        return call


class _Also:
    """Another object's methods behind a :class:`Breaker` (:meth:`Breaker.also`)."""

    def __init__(self, breaker: Breaker, target: object) -> None:
        self._breaker = breaker
        self._target = target

    def __getattr__(self, name: str) -> Any:
        return self._breaker._guarded(self._target, name)
