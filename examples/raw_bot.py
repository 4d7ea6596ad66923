"""A chat bot written from docs/PROTOCOL.md with pyzmq alone.

It imports nothing from this project (no ``protocol``, ``client`` or
``broker``, no msgspec): only pyzmq and the standard library, which is the proof
that the protocol document is enough to write a client in any language. Each
step cites the section of docs/PROTOCOL.md it follows.

What it does: joins one room, answers ``!ping`` with ``pong`` in the room the
line came from, sends heartbeats, ignores its own lines, and says ``bye`` on
SIGINT or SIGTERM.

    python examples/raw_bot.py --server tcp://127.0.0.1:5555 [--nick pingbot] [--room lobby]

Exit status: 0 after a clean leave, 1 if the broker is unreachable, lost or
shutting down, 2 if the broker refused the join (nickname taken or invalid...).

It is deliberately small: it does not repair gaps in sequence numbers (§5.4)
or reconnect (§5.3); a missed ``!ping`` just goes unanswered.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import zmq

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2

#: How long to wait for the welcome and the joined reply.
JOIN_TIMEOUT = 10.0
#: How long to wait for the goodbye after bye (§5.6).
BYE_TIMEOUT = 2.0

Message = dict[str, Any]


class Stop(Exception):
    """The bot must end with this exit status."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


def canonical_room(room: str) -> str:
    """§6: a leading ``#`` is dropped and the name lower-cased."""
    return room.removeprefix("#").lower()


def reachable(pub: str, router: str) -> str:
    """§1: a wildcard host in the welcome's ``pub`` means "the router's host"."""
    parts = urlsplit(pub)
    if parts.scheme == "tcp" and parts.hostname in ("*", "0.0.0.0", "::"):
        return f"tcp://{urlsplit(router).hostname or '127.0.0.1'}:{parts.port}"
    return pub


def messages(frame: bytes) -> list[Message]:
    """§3: a frame holds one JSON object, or a batch: an array of them, in order."""
    value = json.loads(frame)
    return value if isinstance(value, list) else [value]


class RawBot:
    """One DEALER to the broker's ROUTER, one SUB to its XPUB (§1)."""

    def __init__(self, server: str, nick: str, room: str, pub: str | None) -> None:
        self.server = server
        self.nick = nick
        self.room = canonical_room(room)
        self.pub_override = pub
        self.ctx = zmq.Context()
        # No routing id: the ROUTER assigns one per connection (§1). Linger 0 so
        # closing never hangs on a gone broker.
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.linger = 0
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.linger = 0
        self.dealer.connect(server)
        self.heartbeat = 2.0
        self.last_heard = time.monotonic()
        self.stopping = False
        # Broadcasts that arrive before our joined reply (§1: no ordering
        # between DEALER and SUB), handled once we are in.
        self.early: list[Message] = []

    # --- frames ------------------------------------------------------------

    def send(self, message: Message) -> None:
        """§2-3: a request is one frame of UTF-8 JSON."""
        self.dealer.send(json.dumps(message).encode("utf-8"))

    def poll(self, timeout: float) -> tuple[list[Message], list[Message]]:
        """Replies and broadcast bodies that arrive within ``timeout`` seconds."""
        poller = zmq.Poller()
        poller.register(self.dealer, zmq.POLLIN)
        poller.register(self.sub, zmq.POLLIN)
        ready = dict(poller.poll(int(timeout * 1000)))
        replies: list[Message] = []
        broadcasts: list[Message] = []
        while self.dealer in ready:
            try:
                frame = self.dealer.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            self.last_heard = time.monotonic()
            replies += messages(frame)
        while self.sub in ready:
            try:
                _topic, body = self.sub.recv_multipart(zmq.NOBLOCK)  # §3: [topic, body]
            except zmq.Again:
                break
            broadcasts += messages(body)
        return replies, broadcasts

    # --- the join handshake (§5.1) -------------------------------------------

    def join(self) -> None:
        """hello -> welcome -> subscribe room and sync topics -> joined."""
        self.send({"type": "hello", "v": 1, "nick": self.nick, "rooms": [self.room]})
        deadline = time.monotonic() + JOIN_TIMEOUT
        welcomed = False
        while time.monotonic() < deadline:
            if self.stopping:
                raise Stop(EXIT_OK, "stopped while joining")
            replies, broadcasts = self.poll(0.2)
            self.early += broadcasts
            for reply in replies:
                kind = reply.get("type")
                if kind == "error":
                    code, text = reply.get("code"), reply.get("message")
                    if reply.get("req") == "hello" and code != "sync_timeout":
                        raise Stop(
                            EXIT_REFUSED, f"the broker refused {self.nick!r}: {code}: {text}"
                        )
                    raise Stop(EXIT_FAILED, f"could not join: {code}: {text}")
                if kind == "welcome" and not welcomed:
                    welcomed = True
                    self.nick = reply["nick"]
                    self.heartbeat = float(reply["heartbeat"])
                    self.sub.connect(self.pub_override or reachable(reply["pub"], self.server))
                    # Room topic first, the sync topic last: seeing the sync tells
                    # the broker the room subscription is live (§3).
                    self.sub.subscribe(f"room/{self.room}/".encode())
                    self.sub.subscribe(f"sync/{reply['session']}/0/".encode())
                if kind == "joined" and reply.get("room") == self.room:
                    print(f"joined {self.room} as {self.nick}", flush=True)
                    return
        raise Stop(EXIT_FAILED, f"no answer from a broker at {self.server}")

    # --- the main loop ---------------------------------------------------------

    def serve(self) -> None:
        """Answer ``!ping`` and keep the session alive until asked to stop."""
        next_ping = time.monotonic() + self.heartbeat
        lost_after = max(3 * self.heartbeat, 1.0)  # §5.2
        for message in self.early:
            self.on_broadcast(message)
        self.early.clear()
        while not self.stopping:
            now = time.monotonic()
            if now >= next_ping:
                self.send({"type": "ping"})  # §5.2: the broker answers pong
                next_ping = now + self.heartbeat
            if now - self.last_heard > lost_after:
                raise Stop(EXIT_FAILED, "lost the broker: no answer to heartbeats")
            # Short polls, so a signal is acted on promptly.
            replies, broadcasts = self.poll(min(0.2, max(0.0, next_ping - now)))
            for reply in replies:
                self.on_reply(reply)
            for message in broadcasts:
                self.on_broadcast(message)

    def on_reply(self, reply: Message) -> None:
        """§5 replies: most need nothing from a bot this simple."""
        kind = reply.get("type")
        if kind == "renamed":
            self.nick = reply["new"]
        elif kind == "shutdown":
            raise Stop(EXIT_FAILED, f"the broker is shutting down: {reply.get('reason')}")
        elif kind == "error":
            print(f"raw_bot: error {reply.get('code')}: {reply.get('message')}", file=sys.stderr)
            if reply.get("code") == "not_joined":  # §5.3: our session is gone
                raise Stop(EXIT_FAILED, "the broker no longer knows this session")

    def on_broadcast(self, message: Message) -> None:
        """Answer ``!ping`` lines of others; ignore our own (case-insensitive, §6)."""
        if message.get("type") != "message":
            return
        if str(message.get("nick", "")).lower() == self.nick.lower():
            return  # never answer ourselves: two bots could loop
        if str(message.get("text", "")).strip() == "!ping":
            self.send({"type": "say", "room": message["room"], "text": "pong"})
            print(f"answered !ping from {message.get('nick')} in {message['room']}", flush=True)

    def leave(self) -> None:
        """§5.6: say bye and wait briefly for the goodbye."""
        self.send({"type": "bye"})
        deadline = time.monotonic() + BYE_TIMEOUT
        while time.monotonic() < deadline:
            replies, _ = self.poll(0.1)
            if any(r.get("type") == "goodbye" for r in replies):
                return

    def close(self) -> None:
        """Release the sockets and the context."""
        self.dealer.close(0)
        self.sub.close(0)
        self.ctx.term()


def main(argv: list[str] | None = None) -> int:
    """Run the bot; returns the exit status."""
    parser = argparse.ArgumentParser(description="A ping bot speaking protocol v1 by hand.")
    parser.add_argument("--server", default="tcp://127.0.0.1:5555", help="the broker's ROUTER")
    parser.add_argument("--nick", default="pingbot", help="nickname (default pingbot)")
    parser.add_argument("--room", default="lobby", help="room to join (default lobby)")
    parser.add_argument("--pub", default=None, help="override the PUB endpoint of the welcome")
    args = parser.parse_args(argv)

    bot = RawBot(args.server, args.nick, args.room, args.pub)

    def stop(signum: int, frame: FrameType | None) -> None:
        bot.stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    joined = False
    try:
        bot.join()
        joined = True
        bot.serve()
        bot.leave()
        print("left", flush=True)
        return EXIT_OK
    except Stop as stopped:
        if joined and stopped.status != EXIT_FAILED:
            bot.leave()
        if stopped.status != EXIT_OK:
            print(f"raw_bot: {stopped.why}", file=sys.stderr)
        return stopped.status
    finally:
        bot.close()


if __name__ == "__main__":
    sys.exit(main())
