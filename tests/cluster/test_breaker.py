"""The engine's breaker (broker/engine/breaker.py), with time as a parameter."""

from __future__ import annotations

import pytest

from broker.engine import RoomMeta
from broker.engine.api import EngineUnavailable
from broker.engine.breaker import Breaker


class _Engine:
    def __init__(self) -> None:
        self.seen: list[RoomMeta] = []
        self.down = True

    def heartbeat(self) -> None:
        if self.down:
            raise EngineUnavailable("down")

    def saw(self, room: str, meta: RoomMeta) -> None:
        self.seen.append(meta)


def test_an_open_breaker_refuses_engine_calls_but_never_local_bookkeeping() -> None:
    now = [0.0]
    engine = _Engine()
    breaker = Breaker(engine, cooldown=1.0, clock=lambda: now[0])
    with pytest.raises(EngineUnavailable):
        breaker.heartbeat()
    engine.down = False
    with pytest.raises(EngineUnavailable, match="not tried again"):
        breaker.heartbeat()  # open: refused without asking
    # relayed lines are recorded (the failover floor) even while it is open
    breaker.saw("r", RoomMeta(3, "e"))
    assert engine.seen == [RoomMeta(3, "e")]
    now[0] = 1.5
    breaker.heartbeat()  # closed again
