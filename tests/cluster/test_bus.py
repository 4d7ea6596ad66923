"""The bus reader and the follower against a real redis-server: its pub/sub
connection killed, Redis stalled, killed and restarted."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import zmq

from broker.engine import NewLine, RedisEngine, StoredLine
from broker.engine.bus import Bell, BusDown, BusReader, BusUp, parse_bus
from broker.engine.follower import Follower, Output
from broker.engine.relay import Deliver, Reset
from tests.redis_server import SCALE, RedisServer

pytestmark = pytest.mark.timeout(60)


def test_parse_bus_round_trips_the_scripts_format() -> None:
    data = b"Le1\n7\n3\nab\n8\n0\n"
    assert parse_bus("r", data).lines == (StoredLine(7, b"ab\n"), StoredLine(8, b""))  # type: ignore[union-attr]
    assert parse_bus("r", b"Nhello").payload == b"hello"  # type: ignore[union-attr]


def pump_until(
    follower: Follower,
    done: Callable[[list[Output]], bool],
    timeout: float = 10.0,
    *,
    check: bool = True,
) -> list[Output]:
    """Poll the reader's socket as the broker's loop will; all outputs so far.
    With ``check`` false the periodic meta check is off, so any catch-up is
    the bus reader's own (resubscription, then snapshot and range)."""
    out: list[Output] = []
    poller = zmq.Poller()
    poller.register(follower.reader.socket, zmq.POLLIN)
    deadline = time.monotonic() + timeout * SCALE
    while not done(out):
        assert time.monotonic() < deadline, f"not done; got {out}"
        if poller.poll(100):
            out += follower.pump()
        elif check:
            out += follower.check()
    return out


def seqs(out: list[Output]) -> list[int]:
    return [line.seq for o in out if isinstance(o, Deliver) for line in o.lines]


@pytest.fixture
def follower(
    redis_server: RedisServer,
    make_engine: Callable[..., RedisEngine],
    zmq_ctx: zmq.Context[zmq.Socket[bytes]],
) -> Follower:
    engine = make_engine()
    reader = BusReader(
        zmq_ctx, engine.url, prefix="zc", broker=engine.broker_id, timeout=1.0, health=0.5
    )
    reader.start()
    f = Follower(engine, reader)
    yield f  # type: ignore[misc]
    reader.close()


def test_follower_relays_lines_appended_by_any_broker_in_order(
    follower: Follower, make_engine: Callable[..., RedisEngine]
) -> None:
    other = make_engine()
    other.append({"r": [NewLine("a", b"early")]})  # before following: in the snapshot
    follower.follow("r")
    pump_until(follower, lambda out: any(isinstance(o, BusUp) for o in out))
    pump_until(follower, lambda out: follower.relay.last("r") is not None)
    for i in range(20):
        other.append({"r": [NewLine(f"k{i}", b"x")]})
    out = pump_until(follower, lambda out: len(seqs(out)) >= 20)
    assert seqs(out) == list(range(2, 22))


def test_pubsub_connection_killed_reader_reconnects_and_catches_up(
    redis_server: RedisServer, follower: Follower, make_engine: Callable[..., RedisEngine]
) -> None:
    other = make_engine()
    follower.follow("r")
    pump_until(follower, lambda out: follower.relay.last("r") is not None)
    other.append({"r": [NewLine("a", b"1")]})
    out = pump_until(follower, lambda out: seqs(out) == [1])
    assert redis_server.kill_pubsub() == 1
    # lines published while the reader is cut off are lost on the bus ...
    for i in range(10):
        other.append({"r": [NewLine(f"k{i}", b"x")]})
    out = pump_until(
        follower,
        lambda out: (
            any(isinstance(o, BusUp) and o.reconnected for o in out) and len(seqs(out)) >= 10
        ),
        check=False,
    )
    # ... and repaired from the stream once it is back: each once, in order
    assert seqs(out) == list(range(2, 12))
    assert any(isinstance(o, BusDown) for o in out)
    other.append({"r": [NewLine("after", b"x")]})
    assert seqs(pump_until(follower, lambda out: bool(seqs(out)), check=False)) == [12]


def test_redis_stalled_then_back_loses_nothing(
    redis_server: RedisServer, follower: Follower, make_engine: Callable[..., RedisEngine]
) -> None:
    other = make_engine(broker_ttl=60_000)
    follower.follow("r")
    pump_until(follower, lambda out: follower.relay.last("r") is not None)
    stall = redis_server.debug_sleep(1.5)
    stall.join(10)
    for i in range(5):
        other.append({"r": [NewLine(f"k{i}", b"x")]})
    out = pump_until(
        follower,
        lambda out: (
            len(seqs(out)) >= 5 and any(isinstance(o, BusUp) and o.reconnected for o in out)
        ),
    )
    assert seqs(out) == [1, 2, 3, 4, 5]
    assert any(isinstance(o, BusDown) for o in out)  # the unanswered PING noticed the stall


def test_redis_kill_9_and_restart_bus_comes_back_and_catches_up(
    redis_server: RedisServer, follower: Follower, make_engine: Callable[..., RedisEngine]
) -> None:
    other = make_engine(broker_ttl=60_000)
    follower.follow("r")
    pump_until(follower, lambda out: follower.relay.last("r") is not None)
    other.append({"r": [NewLine("a", b"1")]})
    pump_until(follower, lambda out: seqs(out) == [1])
    redis_server.kill()
    pump_until(follower, lambda out: any(isinstance(o, BusDown) for o in out))
    redis_server.restart()
    for i in range(5):
        other.append({"r": [NewLine(f"k{i}", b"x")]})
    out = pump_until(follower, lambda out: len(seqs(out)) >= 5, check=False)
    assert seqs(out) == [2, 3, 4, 5, 6]
    assert not any(isinstance(o, Reset) for o in out)  # AOF: same epoch


def test_inbox_bell_rings_across_brokers(
    follower: Follower, make_engine: Callable[..., RedisEngine]
) -> None:
    other = make_engine()
    pump_until(follower, lambda out: any(isinstance(o, BusUp) for o in out))
    other.send_private(follower.engine.broker_id, b"psst")
    pump_until(follower, lambda out: any(isinstance(o, Bell) for o in out))
    assert [x.payload for x in follower.engine.read_inbox("0-0")] == [b"psst"]


def test_reader_started_while_redis_is_down_comes_up_when_it_starts(
    redis_server: RedisServer,
    make_engine: Callable[..., RedisEngine],
    zmq_ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    engine = make_engine()
    redis_server.kill()
    reader = BusReader(zmq_ctx, engine.url, prefix="zc", broker="b1", timeout=0.5, health=0.5)
    reader.start()
    try:
        follower = Follower(engine, reader)
        follower.follow("r")
        pump_until(follower, lambda out: any(isinstance(o, BusDown) for o in out), check=False)
        redis_server.restart()
        out = pump_until(follower, lambda out: any(isinstance(o, BusUp) for o in out), check=False)
        pump_until(follower, lambda out: follower.relay.last("r") is not None, check=False)
        assert not any(isinstance(o, Deliver) for o in out)
    finally:
        reader.close()
