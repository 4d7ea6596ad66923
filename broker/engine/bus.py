"""The engine's bus in the broker's one poll loop (docs/CLUSTER.md "Bus").

Redis pub/sub carries hints only: each room's bus message is a batch of new
lines in seq order, or a notice; the stream is the truth. Two parts:

- :class:`BusReader` owns the pub/sub connection in a small thread and hands
  events to the loop over an ``inproc`` PAIR socket, which the loop registers
  in its ``zmq.Poller`` like any other socket. A thread rather than polling
  redis-py's socket in the loop: redis-py buffers replies in its parser (a
  readable file descriptor and a ready message are different things), replaces
  the socket on every reconnect, and a reconnect with back-off would stall the
  loop. The thread resubscribes on its own after any loss and says so.
- :class:`~broker.engine.relay.Relay` (``relay.py``) is the pure catch-up
  logic that turns these events into lines to relay.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
import zmq
from redis import exceptions as rx

from broker.engine.api import StoredLine
from broker.engine.url import EngineURL

__all__ = [
    "Bell",
    "BusDown",
    "BusEvent",
    "BusLines",
    "BusNotice",
    "BusReader",
    "BusUp",
    "Subscribed",
    "parse_bus",
]


# -- events from the reader ------------------------------------------------


@dataclass(frozen=True, slots=True)
class BusLines:
    """New lines of a room, consecutive seqs, in one epoch."""

    room: str
    epoch: str
    lines: tuple[StoredLine, ...]


@dataclass(frozen=True, slots=True)
class BusNotice:
    """A notice (join, leave, rename) published on a room's bus."""

    room: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The room's channel is live (again): take a meta snapshot now."""

    room: str


@dataclass(frozen=True, slots=True)
class Bell:
    """Something arrived in this broker's inbox: read it."""


@dataclass(frozen=True, slots=True)
class BusUp:
    """Connected; ``reconnected`` after an outage (read the inbox again too)."""

    reconnected: bool


@dataclass(frozen=True, slots=True)
class BusDown:
    """The pub/sub connection is lost; the reader keeps trying."""

    reason: str


BusEvent = BusLines | BusNotice | Subscribed | Bell | BusUp | BusDown


def parse_bus(room: str, data: bytes) -> BusLines | BusNotice:
    """Decode a room's bus message (the format is in zchat.lua's append)."""
    if data[:1] == b"N":
        return BusNotice(room, data[1:])
    if data[:1] != b"L":
        raise ValueError(f"unknown bus message for {room}: {data[:20]!r}")
    end = data.index(b"\n")
    epoch = data[1:end].decode()
    lines: list[StoredLine] = []
    pos = end + 1
    while pos < len(data):
        nl = data.index(b"\n", pos)
        nl2 = data.index(b"\n", nl + 1)
        seq, size = int(data[pos:nl]), int(data[nl + 1 : nl2])
        lines.append(StoredLine(seq, data[nl2 + 1 : nl2 + 1 + size]))
        pos = nl2 + 1 + size
    return BusLines(room, epoch, tuple(lines))


class BusReader:
    """Reads the bus in a thread; the loop polls :attr:`socket` and calls
    :meth:`events`. Subscribes to this broker's bell from the start."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        url: EngineURL,
        *,
        prefix: str,
        broker: str,
        timeout: float = 2.0,
        health: float = 1.0,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._bell = f"{prefix}:bell:{broker}"
        self._timeout = timeout
        self._health = health
        addr = f"inproc://zc-bus-{id(self):x}"
        self.socket: zmq.Socket[bytes] = ctx.socket(zmq.PAIR)
        self.socket.linger = 0
        self.socket.bind(addr)
        self._peer: zmq.Socket[bytes] = ctx.socket(zmq.PAIR)
        self._peer.linger = 0
        self._peer.connect(addr)
        self._thread = threading.Thread(target=self._run, name="zc-bus", daemon=True)

    def start(self) -> None:
        """Start the reader thread."""
        self._thread.start()

    def subscribe(self, room: str) -> None:
        """Follow a room's bus; a :class:`Subscribed` event says when it is live."""
        self.socket.send_multipart([b"sub", room.encode()])

    def unsubscribe(self, room: str) -> None:
        """Stop following a room's bus."""
        self.socket.send_multipart([b"unsub", room.encode()])

    def events(self) -> list[BusEvent]:
        """Every event waiting now (never blocks)."""
        out: list[BusEvent] = []
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return out
            # the thread sends what one drain found as one message of triples
            for k in range(0, len(frames), 3):
                out.append(self._decode(frames[k], frames[k + 1], frames[k + 2]))

    def close(self) -> None:
        """Stop the thread (draining what it still sends) and close the sockets."""
        if self._thread.is_alive():
            self.socket.send_multipart([b"stop"])
            while self._thread.is_alive():
                self.events()
                self._thread.join(0.05)
        self.socket.close()
        self._peer.close()

    def _decode(self, kind: bytes, a: bytes, b: bytes) -> BusEvent:
        if kind == b"msg":
            return parse_bus(a.decode(), b)
        if kind == b"sub":
            return Subscribed(a.decode())
        if kind == b"bell":
            return Bell()
        if kind == b"up":
            return BusUp(a == b"1")
        return BusDown(a.decode())

    # -- the thread ------------------------------------------------------------

    def _channel(self, room: str) -> str:
        return f"{self._prefix}:{{{room}}}:bus"

    def _room(self, channel: bytes) -> str | None:
        text = channel.decode()
        if text == self._bell:
            return None
        return text[text.index("{") + 1 : text.index("}")]

    def _run(self) -> None:
        state = _ReaderState(channels={self._bell})
        backoff = 0.05
        while True:
            try:
                if not self._connection(state):
                    return
            except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
                if not state.down:
                    state.down = True
                    self._peer.send_multipart([b"down", str(exc).encode(), b""])
                if state.was_up:
                    backoff, state.was_up = 0.05, False
            # back off, still obeying commands (stop, or channels to add)
            if not self._wait(backoff, state.channels):
                return
            backoff = min(backoff * 2, 1.0)

    def _connection(self, state: _ReaderState) -> bool:
        """One pub/sub connection, until it fails (raises) or stop (False)."""
        client = self._url.client(timeout=self._timeout)
        pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(*state.channels)
            waiting = set(state.channels)
            poller = zmq.Poller()
            poller.register(self._peer, zmq.POLLIN)
            assert pubsub.connection is not None
            # redis-py's socket (private, replaced on reconnect: we never
            # reconnect this object, a new connection gets a new PubSub)
            poller.register(pubsub.connection._sock, zmq.POLLIN)
            last_rx = time.monotonic()
            ping_at: float | None = None
            while True:
                ready = dict(poller.poll(int(self._health * 500)))
                if self._peer in ready and not self._commands(pubsub, state.channels, waiting):
                    return False
                out: list[bytes] = []
                while (message := pubsub.get_message(timeout=0)) is not None:
                    last_rx, ping_at = time.monotonic(), None
                    self._forward(message, state, waiting, out)
                if out:
                    self._peer.send_multipart(out)
                now = time.monotonic()
                if now - last_rx > self._health:
                    if ping_at is None:
                        pubsub.ping()
                        ping_at = now
                    elif now - ping_at > self._health:
                        raise rx.ConnectionError("no reply to PING on the bus")
        finally:
            pubsub.close()
            client.close()

    def _forward(
        self, message: dict[str, Any], state: _ReaderState, waiting: set[str], out: list[bytes]
    ) -> None:
        """Turn one pub/sub message into event triples for the loop."""
        kind, channel = message["type"], message["channel"]
        if kind == "message":
            room = self._room(channel)
            if room is None:
                out += [b"bell", b"", b""]
            else:
                out += [b"msg", room.encode(), message["data"]]
        elif kind == "subscribe" and channel.decode() in state.channels:
            waiting.discard(channel.decode())
            room = self._room(channel)
            if room is not None:
                out += [b"sub", room.encode(), b""]
            if not waiting and (state.down or not state.was_up):
                out += [b"up", b"1" if state.ever_up else b"0", b""]
                if state.ever_up:
                    out += [b"bell", b"", b""]  # read what came meanwhile
                state.down, state.ever_up, state.was_up = False, True, True

    def _commands(
        self, pubsub: redis.client.PubSub | None, channels: set[str], waiting: set[str]
    ) -> bool:
        """Apply the loop's commands; False on stop."""
        while True:
            try:
                frames = self._peer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            if frames[0] == b"stop":
                return False
            channel = self._channel(frames[1].decode())
            if frames[0] == b"sub" and channel not in channels:
                channels.add(channel)
                waiting.add(channel)
                if pubsub is not None:
                    pubsub.subscribe(channel)
            elif frames[0] == b"unsub" and channel in channels:
                channels.discard(channel)
                waiting.discard(channel)
                if pubsub is not None:
                    pubsub.unsubscribe(channel)  # type: ignore[no-untyped-call]

    def _wait(self, seconds: float, channels: set[str]) -> bool:
        if self._peer.poll(int(seconds * 1000)):
            return self._commands(None, channels, set())
        return True


@dataclass
class _ReaderState:
    """What the reader thread keeps across connections."""

    channels: set[str]
    down: bool = False  # BusDown said, BusUp not yet
    ever_up: bool = False  # connected at least once (the next BusUp is a reconnect)
    was_up: bool = False  # this connection got all its confirmations
