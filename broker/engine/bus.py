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
- :class:`Relay` is the pure catch-up logic (message in, actions out, as the
  broker core): per room it relays lines in seq order exactly once, asks for
  the missing range when a bus message skips seqs, takes a meta snapshot
  after every (re)subscription (subscribe first, then snapshot: the Clone
  pattern), and announces a new epoch as a reset, never renumbering silently.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import zmq
from redis import exceptions as rx

from broker.engine.api import History, RoomMeta, StoredLine
from broker.engine.url import EngineURL

__all__ = [
    "Bell",
    "BusDown",
    "BusEvent",
    "BusLines",
    "BusNotice",
    "BusReader",
    "BusUp",
    "Deliver",
    "NeedMeta",
    "NeedRange",
    "Relay",
    "RelayAction",
    "Reset",
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
        pubsub = self._url.client(timeout=self._timeout).pubsub()  # type: ignore[no-untyped-call]
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


# -- the relay: pure catch-up logic -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Deliver:
    """Relay these lines of a room to local subscribers, in this order."""

    room: str
    epoch: str
    lines: tuple[StoredLine, ...]


@dataclass(frozen=True, slots=True)
class Reset:
    """The room's numbering restarted (new epoch): tell the room's clients."""

    room: str
    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class NeedMeta:
    """Read these rooms' meta and call :meth:`Relay.on_meta`."""

    rooms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NeedRange:
    """Fetch the room's lines ``after < seq < before`` (forward) and call
    :meth:`Relay.on_range`."""

    room: str
    after: int
    before: int


RelayAction = Deliver | Reset | NeedMeta | NeedRange


@dataclass
class _ReaderState:
    """What the reader thread keeps across connections."""

    channels: set[str]
    down: bool = False  # BusDown said, BusUp not yet
    ever_up: bool = False  # connected at least once (the next BusUp is a reconnect)
    was_up: bool = False  # this connection got all its confirmations


@dataclass
class _Track:
    epoch: str = ""
    last: int = -1  # -1: no snapshot yet
    held: dict[int, StoredLine] = field(default_factory=dict)
    held_epoch: str = ""
    fetch_before: int = 0  # > 0 while a NeedRange is out


class Relay:
    """Per followed room: relay each line once, in seq order, repairing gaps."""

    def __init__(self) -> None:
        self._rooms: dict[str, _Track] = {}

    def follow(self, room: str) -> None:
        """Start following (subscribe on the bus too); lines wait for a snapshot."""
        self._rooms.setdefault(room, _Track())

    def unfollow(self, room: str) -> None:
        """Stop following a room."""
        self._rooms.pop(room, None)

    def last(self, room: str) -> RoomMeta | None:
        """The last seq relayed for a room, and its epoch (None before the snapshot)."""
        track = self._rooms.get(room)
        if track is None or track.last < 0:
            return None
        return RoomMeta(track.last, track.epoch)

    def rooms(self) -> tuple[str, ...]:
        """The rooms followed."""
        return tuple(self._rooms)

    def on_subscribed(self, room: str) -> list[RelayAction]:
        """The bus is live for the room (first time or again): snapshot it."""
        return [NeedMeta((room,))] if room in self._rooms else []

    def on_meta(self, room: str, meta: RoomMeta) -> list[RelayAction]:
        """A meta snapshot (after subscribing, or a periodic stale-bus check)."""
        track = self._rooms.get(room)
        if track is None:
            return []
        if track.last < 0:
            if track.held_epoch != meta.epoch:
                track.held.clear()
            track.epoch, track.last = meta.epoch, meta.seq
            return self._drain(room, track)
        if meta.epoch != track.epoch:
            return self._reset(room, track, meta.epoch, meta.seq)
        if meta.seq > track.last and not track.fetch_before:
            track.fetch_before = meta.seq + 1
            return [NeedRange(room, track.last, meta.seq + 1)]
        return []

    def on_lines(self, room: str, epoch: str, lines: Sequence[StoredLine]) -> list[RelayAction]:
        """Lines from the bus."""
        track = self._rooms.get(room)
        if track is None or not lines:
            return []
        if track.last < 0:  # before the snapshot: hold them
            if epoch != track.held_epoch:
                track.held.clear()
                track.held_epoch = epoch
            track.held.update((line.seq, line) for line in lines)
            return []
        actions: list[RelayAction] = []
        if epoch != track.epoch:
            actions += self._reset(room, track, epoch, lines[0].seq - 1)
        for line in lines:
            if line.seq > track.last:
                track.held[line.seq] = line
        return actions + self._drain(room, track)

    def on_range(self, room: str, history: History) -> list[RelayAction]:
        """The lines a NeedRange asked for. Lines below the first one returned
        are gone from the engine (trimmed): they are skipped here, and clients
        learn of them as ``missed`` when they repair from history."""
        track = self._rooms.get(room)
        if track is None:
            return []
        before, track.fetch_before = track.fetch_before, 0
        if history.meta.epoch != track.epoch:
            return self._reset(room, track, history.meta.epoch, history.meta.seq)
        lines = [line for line in history.lines if line.seq > track.last]
        first = lines[0].seq if lines else before
        if history.missed or not lines:
            track.last = max(track.last, first - 1)
        for line in lines:
            track.held.setdefault(line.seq, line)
        return self._drain(room, track)

    def abandon(self, room: str) -> None:
        """A NeedRange could not be served; a later event or check asks again."""
        track = self._rooms.get(room)
        if track is not None:
            track.fetch_before = 0

    def _reset(self, room: str, track: _Track, epoch: str, seq: int) -> list[RelayAction]:
        track.epoch, track.last, track.fetch_before = epoch, seq, 0
        track.held.clear()  # lines of the old numbering
        return [Reset(room, epoch, seq)]

    def _drain(self, room: str, track: _Track) -> list[RelayAction]:
        ready: list[StoredLine] = []
        for seq in sorted(track.held):
            if seq <= track.last:
                del track.held[seq]
            elif seq == track.last + 1:
                ready.append(track.held.pop(seq))
                track.last = seq
            else:
                break
        actions: list[RelayAction] = [Deliver(room, track.epoch, tuple(ready))] if ready else []
        if track.held and not track.fetch_before:
            track.fetch_before = min(track.held)
            actions.append(NeedRange(room, track.last, track.fetch_before))
        return actions
