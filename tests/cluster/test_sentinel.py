"""A Sentinel failover that loses acknowledged lines, end to end (docs/CLUSTER.md
"Failover").

Real processes: a Redis primary, one replica, a Sentinel, two ``chat-broker
--engine redis+sentinel://…`` and raw protocol clients. The loss is staged
deterministically: the replica is cut off (its PSYNC refused by ACL, its link
killed) while the primary acknowledges lines, then the primary is killed -9
and Sentinel promotes the replica, which never had them. What must hold: the
brokers find the new primary on their own; no client is ever shown one
(epoch, seq) naming two different lines; every client is told (the room's
epoch changes); history under the new epoch counts the lost lines as
``missed``.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zmq

from broker.engine import EngineSettings, RedisEngine
from broker.engine.api import AppendResult, EngineUnavailable, NewLine, RoomMeta
from tests.conformance.rawchat import WAIT, Message, RawClient, joined_to
from tests.conftest import BrokerProcess, spawn_broker
from tests.redis_server import SCALE, RedisServer, SentinelServer

pytestmark = [pytest.mark.timeout(60), pytest.mark.chaos]

ROOM = "lobby"


@dataclass
class Numbering:
    """What every client was shown: (epoch, seq) -> line, per room. A client
    attributes a line or an ack to the epoch it holds for the room when it
    reads it, as a client following docs/PROTOCOL.md §5.4 does. Lines are
    named by their text, which is also their key (every text is unique), so
    that an ack names the line it is for."""

    ids: dict[tuple[str, int], str] = field(default_factory=dict)

    def name(self, who: str, epoch: str, seq: int, line: str) -> None:
        known = self.ids.setdefault((epoch, seq), line)
        assert known == line, f"{who}: ({epoch}, {seq}) names {known} and {line}"


class Watcher:
    """A raw client of one broker that keeps its room's epoch as §5.4 says."""

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], broker: BrokerProcess, numbering: Numbering
    ) -> None:
        self.raw = RawClient(ctx, broker.router, broker.pub)
        self.numbering = numbering
        self.name = ""
        self.epoch = ""
        self.epochs: list[str] = []  # every epoch it was told, in order
        self.lines: list[Message] = []
        self.acks: dict[str, Message] = {}
        self.errors: list[Message] = []

    def join(self, nick: str) -> None:
        self.name = nick
        raw = self.raw
        welcome = raw.hello(nick, [ROOM])
        assert welcome["type"] == "welcome", welcome
        raw.subscribe_after_welcome(welcome, [ROOM])
        raw.replies.insert(0, raw.reply(joined_to(ROOM)))  # collect() reads its epoch
        raw.heartbeat = float(welcome["heartbeat"])
        raw.next_ping = time.monotonic() + raw.heartbeat
        self.collect()

    def _adopt(self, epoch: str) -> None:
        if epoch and epoch != self.epoch:
            self.epoch = epoch
            self.epochs.append(epoch)

    def collect(self, seconds: float = 0.0) -> None:
        self.raw._pump(seconds)
        for reply in self.raw.replies:
            kind = reply.get("type")
            if kind in {"joined", "history"} and reply.get("room") == ROOM:
                self._adopt(reply.get("epoch", ""))
                for line in reply.get("messages", []):
                    self.numbering.name(self.name, self.epoch, line["seq"], line["text"])
            elif kind == "pong":
                self._adopt(reply.get("epochs", {}).get(ROOM, ""))
            elif kind == "ack":
                self.acks[reply["key"]] = reply
                self.numbering.name(self.name, self.epoch, reply["seq"], reply["key"])
            elif kind == "error":
                self.errors.append(reply)
        self.raw.replies.clear()
        for _, message in self.raw.broadcasts:
            if message["type"] == "message":
                self.lines.append(message)
                self.numbering.name(self.name, self.epoch, message["seq"], message["text"])
        self.raw.broadcasts.clear()

    def until(self, done: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout * SCALE
        while not done():
            assert time.monotonic() < deadline, f"{self.name}: no {what}; {self.errors[-3:]}"
            self.collect(0.05)

    def say(self, text: str) -> None:
        self.raw.send({"type": "say", "room": ROOM, "text": text, "key": text})

    def say_until_acked(
        self, text: str, timeout: float = 30.0, resend_every: float = 0.0
    ) -> Message:
        """Send a keyed line, resending it after each ``unavailable`` (the
        failover), and every ``resend_every`` seconds if given, until it is
        acknowledged."""
        deadline = time.monotonic() + timeout * SCALE
        self.say(text)
        resend_at = time.monotonic() + resend_every
        while text not in self.acks:
            assert time.monotonic() < deadline, f"{self.name}: {text} never acked"
            self.collect(0.05)
            if resend_every and time.monotonic() >= resend_at:
                resend_at = time.monotonic() + resend_every
                self.say(text)
            if any(e.get("key") == text for e in self.errors):
                self.errors = [e for e in self.errors if e.get("key") != text]
                self.collect(0.2)  # the failover is under way: ask again soon
                self.say(text)
        return self.acks[text]

    def texts(self) -> list[str]:
        return [m["text"] for m in self.lines]


@dataclass
class Cluster:
    primary: RedisServer
    replica: RedisServer
    sentinel: SentinelServer
    brokers: list[BrokerProcess]


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary and one replica, linked and caught up."""
    primary = RedisServer(tmp_path / "primary")
    replica = RedisServer(tmp_path / "replica", replica_of=primary)
    try:
        for server in (primary, replica):
            server.directory.mkdir()
        primary.start()
        replica.start()
        primary.wait_replicated(replica)
        yield primary, replica
    finally:
        if replica.proc is not None:
            replica.send_signal(signal.SIGCONT)  # a test stopped it
        replica.kill()
        primary.kill()


@pytest.fixture
def cluster(replicated: tuple[RedisServer, RedisServer], tmp_path: Path) -> Iterator[Cluster]:
    """Primary and replica, a Sentinel (1 s to declare the primary down), two brokers."""
    primary, replica = replicated
    sentinel: SentinelServer | None = None
    brokers: list[BrokerProcess] = []
    try:
        sentinel = SentinelServer(tmp_path / "sentinel", primary, down_after_ms=1000).start()
        sentinel.wait_replicas(1)
        for _ in range(2):
            brokers.append(
                spawn_broker("--engine", sentinel.url, "--max-rate", "0", "--client-timeout", "6")
            )
        yield Cluster(primary, replica, sentinel, brokers)
    finally:
        for n, broker in enumerate(brokers):
            broker.stop(signal.SIGKILL)
            print(f"--- broker {n}:", "".join(broker.log[-40:]))  # shown when it failed
        if sentinel is not None:
            sentinel.kill()


@pytest.fixture
def watchers() -> Iterator[Callable[[BrokerProcess], Watcher]]:
    """Make watchers sharing one numbering; their sockets closed at the end."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    context.linger = 0
    numbering = Numbering()
    made: list[Watcher] = []

    def make(broker: BrokerProcess) -> Watcher:
        made.append(Watcher(context, broker, numbering))
        return made[-1]

    yield make
    for watcher in made:
        watcher.raw.close()
    context.term()


def test_a_failover_that_loses_acknowledged_lines_changes_the_epoch_never_renumbers(
    cluster: Cluster, watchers: Callable[[BrokerProcess], Watcher]
) -> None:
    a, b = cluster.brokers
    alice, bob = watchers(a), watchers(b)
    alice.join("alice")
    bob.join("bob")
    first_epoch = alice.epoch
    assert first_epoch and bob.epoch == first_epoch
    for n in range(5):
        alice.say_until_acked(f"kept{n}")
    cluster.primary.wait_replicated(cluster.replica)

    # the replica stops getting writes: these lines are acked by the primary only
    cluster.primary.cut_replicas()
    lost = [f"lost{n}" for n in range(8)]
    for n, text in enumerate(lost):
        (alice if n % 2 else bob).say_until_acked(text)
    for who in (alice, bob):
        who.until(lambda w=who: len(w.lines) == 13, "13 lines")  # type: ignore[misc]
    assert [m["seq"] for m in bob.lines] == list(range(1, 14))

    cluster.primary.kill()
    cluster.sentinel.wait_primary(cluster.replica.port)

    # the brokers find the new primary on their own; sends are refused until then
    after = [f"after{n}" for n in range(6)]
    for n, text in enumerate(after):
        (bob if n % 2 else alice).say_until_acked(text)
    for who in (alice, bob):
        who.until(lambda w=who: w.texts()[-6:] == after, "lines after the failover")  # type: ignore[misc]
        # told: the room's numbering changed (pong.epochs, §5.4)
        who.until(lambda w=who: w.epoch != first_epoch, "new epoch", timeout=15)  # type: ignore[misc]
    new_epoch = alice.epoch
    assert bob.epoch == new_epoch

    # a newcomer and a history read see the new numbering: the lost lines are missed
    carol = watchers(b)
    carol.join("carol")
    assert carol.epoch == new_epoch
    carol.raw.send({"type": "history", "room": ROOM, "after": 0, "limit": 100, "forward": True})
    history = carol.raw.reply_of("history")
    carol.raw.replies.insert(0, history)
    carol.collect()
    texts = [m["text"] for m in history["messages"]]
    assert texts == [f"kept{n}" for n in range(5)] + after
    assert history["missed"] == len(lost)
    # every line acknowledged after the failover is stored under its ack
    engine = RedisEngine.connect(cluster.sentinel.url)
    try:
        stored = engine.fetch(ROOM, 0, None, 100, forward=True)
        assert stored.meta.epoch == new_epoch
        seqs = [line.seq for line in stored.lines]
        for who in (alice, bob):
            for text in after:
                if text in who.acks:
                    assert who.acks[text]["seq"] in seqs
    finally:
        engine.close()


def _until_confirmed(engine: RedisEngine, line: NewLine) -> AppendResult:
    """Append ``line`` again and again, as a client's resend timer does, until
    a replica has confirmed it."""
    deadline = time.monotonic() + 10 * SCALE
    while True:
        result = engine.append({ROOM: [line]})[ROOM]
        assert isinstance(result, AppendResult)
        if result.confirmed:
            return result
        assert time.monotonic() < deadline, "never confirmed by a replica"
        time.sleep(0.05)  # the resend timer of a client


def test_with_replicas_required_a_line_is_confirmed_only_once_a_replica_has_it(
    replicated: tuple[RedisServer, RedisServer],
) -> None:
    primary, replica = replicated
    settings = EngineSettings(timeout=2.0, replicas=1, replica_wait=300)
    engine = RedisEngine.connect(primary.url, settings)
    try:
        engine.register()
        # Under load the replica may miss one short WAIT: resend, as a client does.
        first = _until_confirmed(engine, NewLine("k1", b"one"))
        assert first.seqs == (1,)
        replica.send_signal(signal.SIGSTOP)  # its acks stop: WAIT times out
        started = time.monotonic()
        second = engine.append({ROOM: [NewLine("k2", b"two")]})[ROOM]
        assert isinstance(second, AppendResult) and not second.confirmed
        assert second.seqs == (2,)  # stored on the primary all the same
        assert time.monotonic() - started < 1.5  # bounded by replica_wait
        again = engine.append({ROOM: [NewLine("k2", b"two")]})[ROOM]  # the resend
        assert isinstance(again, AppendResult) and not again.confirmed
        replica.send_signal(signal.SIGCONT)
        again = _until_confirmed(engine, NewLine("k2", b"two"))
        assert again.seqs == (2,) and again.duplicates  # the original seq, stored once
    finally:
        engine.close()


def test_a_broker_with_engine_replicas_acknowledges_only_replicated_lines(
    replicated: tuple[RedisServer, RedisServer],
    watchers: Callable[[BrokerProcess], Watcher],
) -> None:
    primary, replica = replicated
    broker = spawn_broker(
        "--engine", primary.url, "--engine-replicas", "1", "--max-rate", "0",
        "--client-timeout", "6",
    )  # fmt: skip
    try:
        alice = watchers(broker)
        alice.join("alice")
        alice.say_until_acked("stored", resend_every=0.5)  # as a client's timer does
        replica.send_signal(signal.SIGSTOP)
        alice.say("pending")
        alice.until(lambda: "pending" in alice.texts(), "the line published")
        alice.collect(1.0 * SCALE)  # no ack while no replica has it (no error either)
        assert "pending" not in alice.acks and not alice.errors
        replica.send_signal(signal.SIGCONT)
        ack = alice.say_until_acked("pending", resend_every=0.5)
        assert ack["seq"] == 2  # the resend is the stored line, not a new one
        assert alice.texts() == ["stored", "pending"]
    finally:
        broker.stop(signal.SIGKILL)
        print("--- broker:", "".join(broker.log[-40:]))  # shown when it failed


def test_a_failover_resets_exactly_the_rooms_that_lost_lines(
    replicated: tuple[RedisServer, RedisServer], tmp_path: Path
) -> None:
    primary, replica = replicated
    sentinel = SentinelServer(tmp_path / "sentinel", primary, down_after_ms=1000).start()
    engine: RedisEngine | None = None
    try:
        sentinel.wait_replicas(1)
        engine = RedisEngine.connect(sentinel.url, EngineSettings(timeout=1.0))
        engine.register()
        both = engine.append({r: [NewLine(f"{r}1", b"1")] for r in ("kept", "lost")})
        primary.wait_replicated(replica)
        primary.cut_replicas()
        engine.append({"lost": [NewLine("lost2", b"2"), NewLine("lost3", b"3")]})
        primary.kill()
        sentinel.wait_primary(replica.port)
        deadline = time.monotonic() + 10 * SCALE
        while True:  # the engine finds the new primary through Sentinel
            try:
                metas = engine.meta(["kept", "lost"])
                break
            except EngineUnavailable:
                assert time.monotonic() < deadline, "the new primary never answered"
                time.sleep(0.05)  # polling for a condition, with a deadline
        kept, lost = both["kept"], both["lost"]
        assert isinstance(kept, AppendResult) and isinstance(lost, AppendResult)
        assert metas["kept"] == RoomMeta(1, kept.epoch)  # lost nothing: unchanged
        assert metas["lost"].epoch != lost.epoch and metas["lost"].seq == 3
        history = engine.fetch("lost", 0, None, 10, forward=True)
        assert [x.seq for x in history.lines] == [1] and history.missed == 2
    finally:
        if engine is not None:
            engine.close()
        sentinel.kill()
