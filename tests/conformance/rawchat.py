"""A minimal protocol v1 client made of pyzmq and json only (docs/PROTOCOL.md).

The conformance suite talks to the broker through this and nothing else: it
must not import the project's ``protocol`` or ``client`` packages, so that it
checks the document, not our implementation against itself.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

import zmq

#: Scales every wait (slow machines or remote brokers: CHAT_TEST_SCALE=3).
SCALE = float(os.environ.get("CHAT_TEST_SCALE", "1"))
#: How long to wait for an answer that must come.
WAIT = 5.0 * SCALE
#: How long to watch for something that must not come.
QUIET = 0.5 * SCALE

Message = dict[str, Any]
Predicate = Callable[[Message], bool]


def unique_nick(base: str) -> str:
    """A nickname no other test (or other user of a shared broker) holds."""
    return f"{base}-{secrets.token_hex(4)}"


def unique_room(base: str) -> str:
    """A room name no other test uses."""
    return f"{base}-{secrets.token_hex(4)}"


def reachable(pub: str, router: str) -> str:
    """The welcome's PUB endpoint, with a wildcard host replaced by the router's
    host (§1)."""
    scheme, _, rest = pub.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme == "tcp" and host in ("*", "0.0.0.0", "[::]", "::"):
        router_host = router.partition("://")[2].rpartition(":")[0] or "127.0.0.1"
        return f"tcp://{router_host}:{port}"
    return pub


def joined_to(room: str) -> Predicate:
    """Matches the ``joined`` reply for ``room``."""
    return lambda m: m.get("type") == "joined" and m.get("room") == room


def messages(frame: bytes) -> list[Message]:
    """The messages in one frame from the broker (§3): one JSON object, or a
    batch, an array of two or more objects in order."""
    value = json.loads(frame)
    if isinstance(value, dict):
        return [value]
    assert isinstance(value, list) and len(value) >= 2, f"not a message or a batch: {frame!r}"
    assert all(isinstance(item, dict) for item in value), f"a batch of non-objects: {frame!r}"
    return value


def announces_join(nick: str) -> Predicate:
    """Matches the broadcast announcing that ``nick`` joined: a ``join``, or a
    ``joins`` listing it (§5: a broker may announce simultaneous joins at once)."""
    return lambda m: (
        (m.get("type") == "join" and m.get("nick") == nick)
        or (m.get("type") == "joins" and nick in m.get("nicks", ()))
    )


class RawClient:
    """One DEALER and one SUB, driven by hand.

    Replies that a wait skips are kept, so a later wait can still find them.
    Once joined it sends a ``ping`` every ``heartbeat`` seconds while waiting
    (§5.2), so slow tests are not dropped by the broker.
    """

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], router: str, pub: str | None) -> None:
        self.router = router
        self.pub_override = pub
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.linger = 0
        self.dealer.connect(router)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.linger = 0
        self.replies: list[Message] = []
        self.broadcasts: list[tuple[bytes, Message]] = []
        self.welcome: Message | None = None
        self.heartbeat = 0.0
        self.next_ping = 0.0
        self.sync = 0

    # --- sending -----------------------------------------------------------

    def send(self, message: Message) -> None:
        """Send one request: one frame of UTF-8 JSON (§2)."""
        self.send_frames([json.dumps(message).encode()])

    def send_frames(self, frames: list[bytes]) -> None:
        """Send raw frames, for the malformed-input checks."""
        self.dealer.send_multipart(frames)

    # --- receiving ---------------------------------------------------------

    def _pump(self, timeout: float) -> None:
        """Read whatever arrives within ``timeout`` seconds into the backlogs."""
        if self.heartbeat and time.monotonic() >= self.next_ping:
            self.next_ping = time.monotonic() + self.heartbeat
            self.send({"type": "ping"})
        poller = zmq.Poller()
        poller.register(self.dealer, zmq.POLLIN)
        poller.register(self.sub, zmq.POLLIN)
        ready = dict(poller.poll(int(max(0.0, timeout) * 1000)))
        if self.dealer in ready:
            while True:
                try:
                    frames = self.dealer.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                assert len(frames) == 1, f"a reply is one frame, got {frames!r}"
                self.replies += messages(frames[0])
        if self.sub in ready:
            while True:
                try:
                    frames = self.sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                assert len(frames) == 2, f"a broadcast is two frames, got {frames!r}"
                for message in messages(frames[1]):
                    # Every broadcast of a batch belongs to the topic's room.
                    assert frames[0] == f"room/{message['room']}/".encode(), frames
                    self.broadcasts.append((frames[0], message))

    def reply(self, predicate: Predicate = lambda m: True, timeout: float = WAIT) -> Message:
        """The first reply matching ``predicate``, taken out of the backlog."""
        deadline = time.monotonic() + timeout
        while True:
            for i, message in enumerate(self.replies):
                if predicate(message):
                    return self.replies.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching reply within {timeout} s; got {self.replies}")
            self._pump(min(left, 0.1))

    def reply_of(self, kind: str, timeout: float = WAIT) -> Message:
        """The first reply whose ``type`` is ``kind``."""
        return self.reply(lambda m: m.get("type") == kind, timeout)

    def error(self, code: str | None = None, timeout: float = WAIT) -> Message:
        """The first ``error`` reply (with that code, if given)."""
        return self.reply(
            lambda m: m.get("type") == "error" and (code is None or m.get("code") == code),
            timeout,
        )

    def broadcast(
        self, predicate: Predicate = lambda m: True, timeout: float = WAIT
    ) -> tuple[bytes, Message]:
        """The first broadcast (topic, body) whose body matches ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (topic, message) in enumerate(self.broadcasts):
                if predicate(message):
                    del self.broadcasts[i]
                    return topic, message
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no matching broadcast within {timeout} s; got {self.broadcasts}"
                )
            self._pump(min(left, 0.1))

    def watch(self, seconds: float = QUIET) -> None:
        """Collect everything that arrives for ``seconds`` (for "never sent" checks)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._pump(min(left, 0.1))

    # --- the join handshake (§5.1) -----------------------------------------

    def hello(self, nick: str, rooms: list[str] | None = None, **extra: Any) -> Message:
        """Send ``hello``; return the ``welcome`` or ``error`` that answers it."""
        message: Message = {"type": "hello", "v": 1, "nick": nick, **extra}
        if rooms is not None:
            message["rooms"] = rooms
        self.send(message)
        return self.reply(
            lambda m: (
                m.get("type") == "welcome" or (m.get("type") == "error" and m.get("req") == "hello")
            )
        )

    def subscribe_after_welcome(self, welcome: Message, rooms: list[str]) -> None:
        """Connect the SUB where the welcome says, subscribe the room topics,
        then the sync topic ``sync/<session>/0/`` last."""
        self.welcome = welcome
        self.sub.connect(self.pub_override or reachable(welcome["pub"], self.router))
        for room in rooms:
            self.sub.subscribe(f"room/{room}/".encode())
        self.sub.subscribe(f"sync/{welcome['session']}/0/".encode())

    def join(self, nick: str, rooms: list[str] | None = None) -> Message:
        """The whole handshake: hello, welcome, subscriptions, one ``joined``
        per room. Returns the welcome."""
        wanted = rooms if rooms is not None else ["lobby"]
        welcome = self.hello(nick, rooms)
        assert welcome["type"] == "welcome", welcome
        self.subscribe_after_welcome(welcome, wanted)
        for room in wanted:
            self.reply(joined_to(room))
        self.heartbeat = float(welcome["heartbeat"])
        self.next_ping = time.monotonic() + self.heartbeat
        return welcome

    def join_room(self, room: str) -> Message:
        """Join one more room (§5.1, ``join``); returns the ``joined`` reply."""
        assert self.welcome is not None
        self.sync += 1
        self.sub.subscribe(f"room/{room}/".encode())
        self.sub.subscribe(f"sync/{self.welcome['session']}/{self.sync}/".encode())
        self.send({"type": "join", "room": room, "sync": self.sync})
        return self.reply(joined_to(room))

    def bye(self) -> Message:
        """Leave; returns the ``goodbye``."""
        self.send({"type": "bye"})
        return self.reply_of("goodbye")

    def close(self) -> None:
        """Close both sockets at once (linger 0)."""
        self.dealer.close(0)
        self.sub.close(0)
