"""Hostile input against a running ``chat-broker`` (docs/SECURITY.md).

Several raw sockets throw thousands of random and malformed multipart messages
at the broker (garbage bytes, broken JSON, deep nesting, frames over the size
cap, well-formed requests with wrong field types, and valid joins followed by
nonsense) while two well-behaved clients keep chatting. The broker must not
crash, its memory must stay bounded (no growth between two equal rounds of
abuse), and the well-behaved clients must get every line, in order, once.
(The decoder's own property tests are in tests/test_protocol.py.)
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
import zmq

from client import Client
from client import events as ev
from protocol import SYNC_PREFIX, unpack
from tests.conftest import SCALE, BrokerProcess, spawn_broker, wait_for

FUZZERS = 4
#: Messages per fuzzer per round; two rounds.
PER_ROUND = 1500
LINES = 40  # well-behaved lines per client, spread over both rounds
MAX_FRAME = 32 * 1024
#: Memory may grow this much between the two rounds (caches warming up), no more.
GROWTH_LIMIT_KB = 24 * 1024
RSS_LIMIT_KB = 300 * 1024

_TYPES = ["hello", "say", "msg", "join", "part", "nick", "who", "rooms", "history", "ping", "bye"]
_FIELDS = ["v", "nick", "rooms", "resume", "room", "text", "action", "key", "to", "sync",
           "after", "before", "limit", "type"]  # fmt: skip


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(12 if depth < 3 else 8)
    if kind == 0:
        return rng.choice(["lobby", "fuzz", "alice", "bob", "#Lobby", "", " ", "x" * 500])
    if kind == 1:
        return "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(0, 40)))
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63 - 1, -(2**63), 10**30, 1])
    if kind == 3:
        return rng.random() * rng.choice([1, 1e300, -1e-300])
    if kind == 4:
        return rng.choice([True, False, None])
    if kind == 5:
        return "\x1b[31m\x07\x00\u202e" + "é" * rng.randrange(3)
    if kind == 6:
        return rng.choice(_TYPES)
    if kind == 7:
        return "sync/" + "a" * rng.randrange(30)
    if kind in (8, 9):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(_FIELDS): _value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _garbage(rng: random.Random) -> list[bytes]:
    """One random multipart message for the ROUTER (after the routing id)."""
    kind = rng.randrange(10)
    if kind == 0:
        return [rng.randbytes(rng.randrange(0, 200)) for _ in range(rng.randrange(1, 5))]
    if kind == 1:
        return [b"\xff\xfe" + rng.randbytes(10)]  # not UTF-8
    if kind == 2:
        depth = rng.choice([100, 5000, MAX_FRAME // 2 - 1])
        return [b"[" * depth + b"]" * depth]  # deep nesting
    if kind == 3:
        return [b"x" * rng.randrange(MAX_FRAME // 2, MAX_FRAME - 100)]  # big but allowed
    if kind == 4:
        good = json.dumps({"type": rng.choice(_TYPES), "room": "lobby"}).encode()
        return [good[: rng.randrange(len(good))]]  # truncated JSON
    if kind == 5:
        return [b"", b""]
    message = {rng.choice(_FIELDS): _value(rng) for _ in range(rng.randrange(0, 6))}
    message["type"] = rng.choice([*_TYPES, "welcome", "message", "", "HELLO"])
    try:
        body = json.dumps(message).encode("utf-8", "surrogatepass")
    except (ValueError, UnicodeEncodeError):
        body = b"{}"
    # Stay under --max-frame here: an oversized frame drops the connection and
    # all queued on it (Fuzzer.oversize does that on a throwaway socket).
    return [body[: MAX_FRAME - 100]]


class Fuzzer:
    """A raw DEALER (and a SUB) that joins sometimes and sends nonsense."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], broker: BrokerProcess, seed: int):
        self.rng = random.Random(seed)
        self.seed = seed
        self.dealer = ctx.socket(zmq.DEALER)
        self.sub = ctx.socket(zmq.SUB)
        for sock in (self.dealer, self.sub):
            sock.linger = 0
        self.router = broker.router
        self.dealer.connect(broker.router)
        self.sub.connect(broker.pub)
        self.replies = 0

    def step(self) -> None:
        rng = self.rng
        choice = rng.randrange(20)
        if choice == 0:
            nick = f"fz{self.seed}x{rng.randrange(10_000)}"
            rooms = rng.choice([["fuzz"], ["lobby"], ["fuzz", "lobby"], ["zz"] * 3])
            self.dealer.send_json({"type": "hello", "v": 1, "nick": nick, "rooms": rooms})
        elif choice == 1:
            # Random subscriptions, some looking like sync topics.
            topic = rng.choice([SYNC_PREFIX + rng.randbytes(8) + b"/0/", rng.randbytes(20), b""])
            self.sub.setsockopt(zmq.SUBSCRIBE, topic)
            self.sub.setsockopt(zmq.UNSUBSCRIBE, topic)
        elif choice == 2 and rng.randrange(10) == 0:
            self.oversize()
        else:
            self.dealer.send_multipart(_garbage(rng), copy=False)
        self.drain()

    def oversize(self) -> None:
        """A frame over --max-frame, from a socket of its own: the broker's
        ZeroMQ drops that connection without the broker seeing anything."""
        sock = self.dealer.context.socket(zmq.DEALER)
        sock.linger = 200
        sock.connect(self.router)
        sock.send(b"x" * (MAX_FRAME + self.rng.randrange(1, 1000)))
        sock.close()

    def drain(self) -> None:
        while True:
            try:
                frames = self.dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            bodies = unpack(frames[-1])  # one reply, or a batch of them
            self.replies += len(bodies)
            # A welcome: finish the join, so later nonsense reaches the handlers.
            for body in map(json.loads, bodies):
                if body.get("type") == "welcome":
                    self.sub.setsockopt(zmq.SUBSCRIBE, b"room/fuzz/")
                    topic = SYNC_PREFIX + body["session"].encode() + b"/0/"
                    self.sub.setsockopt(zmq.SUBSCRIBE, topic)
        while True:
            try:
                self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break

    def close(self) -> None:
        self.dealer.close(0)
        self.sub.close(0)


def _collect(
    client: Client, lines: list[str], until: Callable[[ev.Event], bool], timeout: float = 10.0
) -> None:
    """Record the other client's lobby lines until ``until`` holds for an event."""
    other = "bob" if client.nick == "alice" else "alice"
    deadline = time.monotonic() + timeout * SCALE
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = client.next_event(left)
        except TimeoutError:
            break
        if isinstance(event, ev.Message) and event.nick == other and event.room == "lobby":
            lines.append(event.text)
        if until(event):
            return
    raise AssertionError(f"{client.nick} waited {timeout} s in vain; got {lines}")


def rss_kb(pid: int) -> int:
    """Resident memory of a process, from /proc/PID/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS line")


@pytest.mark.timeout(90)
def test_broker_survives_garbage_while_clients_chat() -> None:
    broker = spawn_broker(
        "--client-timeout", "2", "--max-frame", str(MAX_FRAME), "--max-rate", "200",
        "--burst", "200",
    )  # fmt: skip
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    fuzzers: list[Fuzzer] = []
    clients: list[Client] = []
    try:
        for nick in ("alice", "bob"):
            clients.append(Client(broker.router, nick, rooms=["lobby", "fuzz"]))
            clients[-1].connect(timeout=5 * SCALE)
        alice, bob = clients
        wait_for(alice, ev.Join, lambda e: e.nick == "bob")
        fuzzers = [Fuzzer(ctx, broker, seed) for seed in range(FUZZERS)]
        sent: dict[str, list[str]] = {"alice": [], "bob": []}
        # Lines each client got from the other, in arrival order.
        seen: dict[str, list[str]] = {"alice": [], "bob": []}
        memory = []
        for round_ in range(2):
            for i in range(PER_ROUND):
                for fuzzer in fuzzers:
                    fuzzer.step()
                if i % (2 * PER_ROUND // LINES) == 0:
                    for nick, client in (("alice", alice), ("bob", bob)):
                        text = f"{nick} {len(sent[nick])} r{round_}"
                        client.say(text, "lobby")
                        sent[nick].append(text)
            # Let the broker catch up: a round trip through its queue.
            alice.who("lobby")
            _collect(alice, seen["alice"], lambda e: isinstance(e, ev.Who))
            assert broker.proc.poll() is None, "the broker died:\n" + "".join(broker.log)
            memory.append(rss_kb(broker.proc.pid))
            print("round", round_, "broker RSS kB", memory[-1])
        for reader, writer in (("alice", "bob"), ("bob", "alice")):
            client = alice if reader == "alice" else bob
            lines = seen[reader]

            def done(event: ev.Event, lines: list[str] = lines, writer: str = writer) -> bool:
                return len(lines) >= len(sent[writer])

            if len(lines) < len(sent[writer]):
                _collect(client, lines, done)
            assert lines == sent[writer]
        # It kept answering the fuzzers too. Alice's round trip above does not
        # wait for them (the ROUTER takes its connections in turn), so on a
        # loaded machine many answers are still on their way: wait for them.
        wanted = FUZZERS * PER_ROUND // 2
        deadline = time.monotonic() + 20 * SCALE
        while sum(f.replies for f in fuzzers) <= wanted and time.monotonic() < deadline:
            zmq.select([f.dealer for f in fuzzers], [], [], 0.1)
            for fuzzer in fuzzers:
                fuzzer.drain()
        replies = sum(f.replies for f in fuzzers)
        assert replies > wanted, f"{replies} answers to {FUZZERS * 2 * PER_ROUND} messages"
        first, second = memory
        assert second < RSS_LIMIT_KB, f"broker RSS {second} kB"
        assert second - first < GROWTH_LIMIT_KB, f"broker RSS grew {first} -> {second} kB"
        assert not [line for line in broker.log if "Traceback" in line], "".join(broker.log)
    finally:
        for client in clients:
            client.close()
        for fuzzer in fuzzers:
            fuzzer.close()
        ctx.term()
        status = broker.stop()
    assert status == 0, "".join(broker.log)
