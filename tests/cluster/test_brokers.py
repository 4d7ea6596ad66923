"""Several ``chat-broker`` processes on one real Redis: one chat (docs/CLUSTER.md).

Every test starts its own redis-server and brokers (``--engine``), drives
raw protocol clients (tests/conformance/rawchat.py) and hands what they saw
to the one shared :class:`~tests.cluster.checker.Checker`.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
import zmq

from broker.engine import RedisEngine
from tests.cluster.checker import Checker
from tests.conformance.rawchat import WAIT, Message, RawClient, joined_to
from tests.conftest import BrokerProcess, script, spawn_broker
from tests.redis_server import SCALE, RedisServer

pytestmark = pytest.mark.timeout(60)


class Member:
    """A raw client of one broker whose observations go to the checker."""

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], broker: BrokerProcess, checker: Checker
    ) -> None:
        self.raw = RawClient(ctx, broker.router, broker.pub)
        self.checker = checker
        self.name = ""
        self.lines: list[Message] = []
        self.notices: list[Message] = []
        self._taken = 0

    def join(self, nick: str, rooms: list[str]) -> Message:
        self.name = nick
        welcome = self.raw.join(nick, rooms)
        return welcome

    def joined(self, room: str) -> None:
        raise NotImplementedError

    def collect(self, seconds: float = 0.0) -> None:
        """Move what arrived into lines/notices (and the checker)."""
        self.raw.watch(seconds) if seconds else self.raw._pump(0)
        for _, message in self.raw.broadcasts:
            if message["type"] == "message":
                self.lines.append(message)
                self.checker.line(self.name, message)
            else:
                self.notices.append(message)
        self.raw.broadcasts.clear()
        for message in self.raw.replies:
            if message.get("type") == "ack":
                self.checker.ack(message)
            elif message.get("type") == "joined":
                self.checker.joined(self.name, message)
        self.raw.replies = [m for m in self.raw.replies if m.get("type") not in {"ack", "joined"}]

    def until(
        self, done: Callable[[], bool], timeout: float = WAIT, idle: Sequence[Member] = ()
    ) -> None:
        """Collect until ``done()``; the ``idle`` members keep their sessions meanwhile."""
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"{self.name}: timed out; {self.lines[-3:]}"
            for member in idle:
                member.keep_alive()
            self.collect(0.05)

    def keep_alive(self) -> None:
        """Ping when the heartbeat is due, as every client does (§5.2), reading
        nothing: a member that waits, or reads slowly on purpose, while others
        work is not dropped by its broker's ``--client-timeout`` (6 s here)."""
        raw = self.raw
        if raw.heartbeat and time.monotonic() >= raw.next_ping:
            raw.next_ping = time.monotonic() + raw.heartbeat
            raw.send({"type": "ping"})

    def say(self, room: str, text: str, key: str | None = None) -> None:
        message: Message = {"type": "say", "room": room, "text": text}
        if key is not None:
            message["key"] = key
        self.raw.send(message)

    def close(self) -> None:
        self.raw.close()


@pytest.fixture
def cluster(
    redis_server: RedisServer,
) -> Iterator[Callable[..., BrokerProcess]]:
    """Start ``chat-broker --engine`` processes on ``redis_server``; all stopped at the end."""
    started: list[BrokerProcess] = []

    def start(*args: str) -> BrokerProcess:
        handle = spawn_broker(
            "--engine", redis_server.url, "--max-rate", "0", "--client-timeout", "6", *args
        )
        started.append(handle)
        return handle

    yield start
    for handle in started:
        if handle.proc.poll() is None:
            handle.stop(signal.SIGKILL)
        else:
            handle.stop()


@pytest.fixture
def members(zmq_ctx: zmq.Context[zmq.Socket[bytes]]) -> Iterator[Callable[..., Member]]:
    made: list[Member] = []
    checker = Checker()

    def make(broker: BrokerProcess) -> Member:
        member = Member(zmq_ctx, broker, checker)
        made.append(member)
        return member

    make.checker = checker  # type: ignore[attr-defined]
    yield make
    for member in made:
        member.close()


def test_clients_on_two_brokers_share_one_room_in_one_order(
    cluster: Callable[..., BrokerProcess],
    members: Callable[..., Member],
    redis_server: RedisServer,
) -> None:
    a, b = cluster(), cluster()
    alice, bob = members(a), members(b)
    alice.join("alice", ["lobby"])
    bob.join("bob", ["lobby"])
    alice.until(lambda: any(n.get("nick") == "bob" for n in alice.notices))
    for n in range(20):
        alice.say("lobby", f"a{n}", key=f"ka{n}")
        bob.say("lobby", f"b{n}", key=f"kb{n}")
    for member in (alice, bob):
        member.until(lambda m=member: len(m.lines) == 40)  # type: ignore[misc]
    assert [m["id"] for m in alice.lines] == [m["id"] for m in bob.lines]
    assert [m["seq"] for m in alice.lines] == list(range(1, 41))
    alice.until(lambda: len(alice.checker.acks) == 40)
    engine = RedisEngine.connect(redis_server.url)
    try:
        alice.checker.verify(engine, ["lobby"])
    finally:
        engine.close()


def _engine(server: RedisServer) -> RedisEngine:
    return RedisEngine.connect(server.url)


def test_racing_hellos_on_two_brokers_give_a_nickname_to_exactly_one(
    cluster: Callable[..., BrokerProcess],
    zmq_ctx: zmq.Context[zmq.Socket[bytes]],
    redis_server: RedisServer,
) -> None:
    a, b = cluster(), cluster()
    checker = Checker()
    engine = _engine(redis_server)
    for round_ in range(40):
        left, right = RawClient(zmq_ctx, a.router, a.pub), RawClient(zmq_ctx, b.router, b.pub)
        try:
            nick = f"racer{round_}"
            # both hellos leave before either answer is read
            left.send({"type": "hello", "v": 1, "nick": nick, "rooms": ["lobby"]})
            right.send({"type": "hello", "v": 1, "nick": nick.upper(), "rooms": ["lobby"]})
            answers = [
                c.reply(lambda m: m.get("type") in {"welcome", "error"}) for c in (left, right)
            ]
            kinds = sorted(m["type"] for m in answers)
            holders = [
                (side, m["nick"])
                for side, m in zip(("A", "B"), answers, strict=True)
                if m["type"] == "welcome"
            ]
            checker.nicks(holders)  # never two live holders
            assert kinds == ["error", "welcome"], answers
            holder = engine.nick_holder(nick)  # the engine agrees on the winner
            assert (
                holder is not None and holder[1] == max(answers, key=lambda m: m["type"])["session"]
            )
            loser = answers[0] if answers[0]["type"] == "error" else answers[1]
            assert loser["code"] == "nick_taken"
            winner = left if answers[0]["type"] == "welcome" else right
            winner.subscribe_after_welcome(max(answers, key=lambda m: m["type"]), ["lobby"])
            winner.reply(joined_to("lobby"))
            winner.send({"type": "bye"})
            winner.reply_of("goodbye")
        finally:
            left.close()
            right.close()
    engine.close()


def test_who_rooms_history_and_private_lines_across_brokers(
    cluster: Callable[..., BrokerProcess],
    members: Callable[..., Member],
) -> None:
    a, b = cluster(), cluster()
    alice, bob = members(a), members(b)
    alice.join("alice", ["lobby", "dev"])
    bob.join("Bob", ["lobby"])
    for n in range(5):
        alice.say("dev", f"d{n}", key=f"d{n}")
    alice.until(lambda: len(alice.lines) == 5)
    # /who and /rooms see both brokers' members
    bob.raw.send({"type": "who", "room": "lobby"})
    assert bob.raw.reply_of("who")["members"] == ["alice", "Bob"]
    bob.raw.send({"type": "rooms"})
    rooms = {r["room"]: r["members"] for r in bob.raw.reply_of("rooms")["rooms"]}
    assert rooms == {"lobby": 2, "dev": 1}
    # history of a room written through A, read through B
    bob.raw.join_room("dev")
    bob.raw.send({"type": "history", "room": "dev", "after": 0, "limit": 3})
    reply = bob.raw.reply_of("history")
    assert [m["text"] for m in reply["messages"]] == ["d2", "d3", "d4"]
    assert reply["seq"] == 5
    bob.raw.send({"type": "history", "room": "dev", "after": 0, "limit": 2, "forward": True})
    assert [m["seq"] for m in bob.raw.reply_of("history")["messages"]] == [1, 2]
    # a private line from A's client to B's, with its ack
    alice.raw.send({"type": "msg", "to": "bob", "text": "psst", "key": "p1"})
    got = bob.raw.reply(lambda m: m.get("type") == "private")
    assert (got["nick"], got["text"]) == ("alice", "psst")
    assert alice.raw.reply(lambda m: m.get("type") == "ack")["key"] == "p1"
    alice.raw.send({"type": "msg", "to": "nobody", "text": "?"})
    assert alice.raw.error("no_such_nick")
    # a topic set on A and an away message set on B are known on both
    alice.raw.send({"type": "topic", "room": "lobby", "text": "welcome all"})
    bob.until(lambda: any(n["type"] == "topic" for n in bob.notices))
    bob.raw.send({"type": "topic", "room": "lobby"})
    assert bob.raw.reply_of("topic")["text"] == "welcome all"
    bob.raw.send({"type": "away", "text": "lunch"})
    alice.until(lambda: any(n["type"] == "away" for n in alice.notices))
    alice.raw.send({"type": "who", "room": "lobby"})
    assert alice.raw.reply_of("who")["away"] == {"Bob": "lunch"}
    bob.raw.send({"type": "away", "text": ""})
    alice.until(lambda: sum(n["type"] == "away" for n in alice.notices) == 2)
    # a rename is announced on both brokers, and the old nick is free again
    bob.raw.send({"type": "nick", "nick": "robert"})
    assert bob.raw.reply_of("renamed")["new"] == "robert"
    alice.until(lambda: any(n["type"] == "nick" for n in alice.notices))
    alice.raw.send({"type": "nick", "nick": "ROBERT"})
    assert alice.raw.error("nick_taken")
    alice.raw.send({"type": "nick", "nick": "bob"})
    assert alice.raw.reply_of("renamed")["new"] == "bob"


def test_a_broker_killed_9_is_reaped_its_members_leave_once_and_nicks_are_free(
    cluster: Callable[..., BrokerProcess],
    members: Callable[..., Member],
    zmq_ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    a, b = cluster("--engine-lease", "2"), cluster("--engine-lease", "2")
    alice, bob, carol = members(a), members(b), members(b)
    alice.join("alice", ["lobby"])
    bob.join("bob", ["lobby"])
    carol.join("carol", ["lobby"])
    alice.until(
        lambda: {n["nick"] for n in alice.notices if n["type"] == "join"} >= {"bob", "carol"}
    )
    b.proc.kill()
    b.proc.wait(5)
    killed = time.monotonic()
    alice.until(
        lambda: {n["nick"] for n in alice.notices if n["type"] == "leave"} == {"bob", "carol"},
        timeout=10 * SCALE,
    )
    assert time.monotonic() - killed < 10 * SCALE
    leaves = [n for n in alice.notices if n["type"] == "leave"]
    assert all(n["reason"] == "timeout" for n in leaves)
    alice.collect(1.5)  # a second reaper round must not announce them again
    assert len([n for n in alice.notices if n["type"] == "leave"]) == 2
    again = RawClient(zmq_ctx, a.router, a.pub)
    try:
        assert again.hello("BOB", [])["type"] == "welcome"
    finally:
        again.close()
    alice.raw.send({"type": "who", "room": "lobby"})
    assert alice.raw.reply_of("who")["members"] == ["alice"]


def _resend_until_acked(
    member: Member, room: str, text: str, key: str, idle: Sequence[Member] = ()
) -> list[str]:
    """Send a keyed line until it is acknowledged, as a client does after
    ``unavailable``; returns the error codes it got on the way. The ``idle``
    members keep their sessions meanwhile (:meth:`Member.keep_alive`)."""
    codes: list[str] = []
    deadline = time.monotonic() + 20 * SCALE
    while key not in member.checker.acks:
        assert time.monotonic() < deadline, f"{key} never acknowledged; errors {set(codes)}"
        member.say(room, text, key=key)
        try:
            answer = _reply(
                member,
                lambda m: m.get("key") == key and m.get("type") in {"ack", "error"},
                3 * SCALE,
                idle,
            )
        except AssertionError:
            continue  # a stalled engine: send it again
        if answer["type"] == "ack":
            member.checker.ack(answer)
        else:
            codes.append(answer["code"])
            member.raw.watch(0.1)
    return codes


def _reply(
    member: Member, predicate: Callable[[Message], bool], timeout: float, idle: Sequence[Member]
) -> Message:
    """``member``'s first reply matching ``predicate`` within ``timeout``, the
    ``idle`` members pinging meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        for other in idle:
            other.keep_alive()
        try:
            return member.raw.reply(
                predicate, timeout=max(0.0, min(0.1, deadline - time.monotonic()))
            )
        except AssertionError:
            if time.monotonic() >= deadline:
                raise


@pytest.mark.parametrize("outage", ["short", "past the lease"])
def test_redis_down_sends_are_unavailable_clients_stay_and_catch_up(
    outage: str,
    cluster: Callable[..., BrokerProcess],
    members: Callable[..., Member],
    redis_server: RedisServer,
) -> None:
    a, b = cluster("--engine-lease", "2"), cluster("--engine-lease", "2")
    alice, bob = members(a), members(b)
    alice.join("alice", ["lobby"])
    bob.join("bob", ["lobby"])
    _resend_until_acked(alice, "lobby", "before", "k0")
    for member in (alice, bob):  # bob's join notice came before this line
        member.until(lambda m=member: "before" in [x["text"] for x in m.lines])  # type: ignore[misc]
        member.notices.clear()
    redis_server.kill()
    alice.say("lobby", "during", key="k1")
    error = alice.raw.error("unavailable")
    assert error["key"] == "k1" and error["req"] == "say"
    if outage != "short":
        alice.raw.watch(3 * SCALE)  # pinging: the session stays
    redis_server.restart()
    _resend_until_acked(alice, "lobby", "during", "k1")
    _resend_until_acked(bob, "lobby", "after", "k2")
    for member in (alice, bob):
        member.until(
            lambda m=member: [x["text"] for x in m.lines][-3:] == ["before", "during", "after"]
        )  # type: ignore[misc]
    alice.raw.send({"type": "who", "room": "lobby"})
    assert sorted(alice.raw.reply_of("who")["members"]) == ["alice", "bob"]
    if outage != "short":  # the brokers were fenced and won their sessions back
        a.wait_for_log("lease expired")
        b.wait_for_log("lease expired")
        # Their old ids stay in the registry until a reaper removes them, by
        # when both have won their sessions back: the outage was Redis's,
        # nobody left (found by hand: every member was seen leaving with
        # reason timeout and joining again after a Redis restart).
        until = time.monotonic() + WAIT
        while redis_server.client().zcard("zc:brokers") > 2:
            assert time.monotonic() < until, "the brokers' old ids were never reaped"
            alice.until(lambda: True, idle=[bob])
            bob.until(lambda: True, idle=[alice])
    for member in (alice, bob):
        member.collect(0.3)
        assert [n for n in member.notices if n["type"] in ("leave", "join")] == []
    engine = _engine(redis_server)
    try:
        alice.checker.verify(engine, ["lobby"], repaired=False)
    finally:
        engine.close()


def _repair(member: Member, room: str, last: int = 0) -> None:
    """Fill the member's gaps from history, as a client does (§5.5); up to
    ``last`` too where it knows the room got that far (lost at its end)."""
    seqs = member.checker.delivered[member.name][room]
    start = member.checker.joined_at[member.name].get(room, 0)
    have = set(seqs)
    end = max(*seqs, last, start)
    missing = [s for s in range(start + 1, end + 1) if s not in have]
    if missing:
        member.raw.send(
            {
                "type": "history",
                "room": room,
                "after": missing[0] - 1,
                "before": missing[-1] + 1,
                "limit": 1000,
                "forward": True,
            }
        )
        member.checker.repair(member.name, member.raw.reply_of("history"))


def _verify(redis_server: RedisServer, checker: Checker, rooms: list[str]) -> None:
    engine = _engine(redis_server)
    try:
        checker.verify(engine, rooms)
    finally:
        engine.close()


def test_keyed_lines_sent_to_a_killed_broker_and_resent_to_another_are_stored_once(
    cluster: Callable[..., BrokerProcess],
    members: Callable[..., Member],
    redis_server: RedisServer,
) -> None:
    a, b = cluster(), cluster()
    sender, watcher = members(a), members(b)
    sender.join("sender", ["lobby"])
    watcher.join("watcher", ["lobby"])
    keys = [f"key{n}" for n in range(60)]
    for n, key in enumerate(keys):
        sender.say("lobby", f"line {n}", key=key)
    watcher.until(lambda: len(watcher.lines) >= 1)  # some of them are stored
    a.proc.kill()  # before the sender read a single ack
    a.proc.wait(5)
    sender.raw.replies.clear()
    again = members(b)
    again.join("sender2", ["lobby"])
    for n, key in enumerate(keys):
        _resend_until_acked(again, "lobby", f"line {n}", key)
    watcher.until(lambda: len(watcher.lines) == 60)
    history = _engine(redis_server)
    try:
        stored = history.fetch("lobby", 0, None, 1000, forward=True)
        assert stored.meta.seq == 60  # each key once, whichever broker stored it
    finally:
        history.close()
    _verify(redis_server, again.checker, ["lobby"])


def test_a_broker_paused_past_its_lease_is_fenced_and_writes_no_ghost_line(
    cluster: Callable[..., BrokerProcess],
    members: Callable[..., Member],
    redis_server: RedisServer,
) -> None:
    a, b = cluster("--engine-lease", "1.5"), cluster("--engine-lease", "1.5")
    alice, bob = members(a), members(b)
    alice.join("alice", ["lobby"])
    bob.join("bob", ["lobby"])
    _resend_until_acked(alice, "lobby", "before", "k0")
    a.proc.send_signal(signal.SIGSTOP)
    try:
        bob.until(
            lambda: any(n["type"] == "leave" for n in bob.notices), timeout=10 * SCALE
        )  # B reaped A: alice's leave (timeout)
        alice.say("lobby", "ghost?", key="k1")  # queued in A's socket while it sleeps
    finally:
        a.proc.send_signal(signal.SIGCONT)
    error = alice.raw.error("unavailable")  # refused by the fence, not stored
    assert error["key"] == "k1"
    a.wait_for_log("lease expired")
    _resend_until_acked(alice, "lobby", "ghost?", "k1")
    bob.until(lambda: [x["text"] for x in bob.lines] == ["before", "ghost?"])
    assert [n["reason"] for n in bob.notices if n["type"] == "leave"] == ["timeout"]
    assert any(n["type"] == "join" and n["nick"] == "alice" for n in bob.notices)
    _verify(redis_server, bob.checker, ["lobby"])


def test_kill_9_of_a_broker_during_a_flood_loses_and_duplicates_nothing(
    cluster: Callable[..., BrokerProcess],
    members: Callable[..., Member],
    redis_server: RedisServer,
) -> None:
    a, b = cluster("--engine-lease", "2"), cluster("--engine-lease", "2")
    listener = members(a)
    listener.join("listener", ["lobby"])
    senders = [members(b) for _ in range(6)]
    for n, sender in enumerate(senders):
        sender.join(f"s{n}", ["lobby"])
    sent: list[tuple[str, str]] = []
    for round_ in range(40):
        for n, sender in enumerate(senders):
            key = f"s{n}-{round_}"
            sender.say("lobby", key, key=key)
            sent.append((key, key))
        if round_ == 20:
            b.proc.kill()
            b.proc.wait(5)
    # the senders' clients fail over to A and resend whatever was not acked
    for sender in senders:
        sender.collect()
    again = members(a)
    again.join("resender", ["lobby"])
    for key, text in sent:
        if key not in again.checker.acks:
            _resend_until_acked(again, "lobby", text, key)
    listener.until(lambda: {m["text"] for m in listener.lines} >= {k for k, _ in sent})
    _repair(listener, "lobby")
    _verify(redis_server, listener.checker, ["lobby"])
    assert len(listener.lines) == len(sent)


def test_pubsub_connections_killed_and_redis_stalled_brokers_catch_up(
    cluster: Callable[..., BrokerProcess],
    members: Callable[..., Member],
    redis_server: RedisServer,
) -> None:
    a, b = cluster(), cluster()
    sender, listener = members(a), members(b)
    sender.join("sender", ["lobby"])
    listener.join("listener", ["lobby"])
    # The listener reads only at the end, but pings meanwhile: the sender's
    # part takes about 5.5 s on a loaded machine, and a silent listener was
    # dropped at the brokers' 6 s --client-timeout (then B stops following
    # the room: its lines stop, which looked like a lost catch-up).
    keys = [f"k{n}" for n in range(60)]
    for n, key in enumerate(keys[:20]):
        sender.say("lobby", key, key=key)
        if n == 10:
            assert redis_server.kill_pubsub() >= 2
    for key in keys[:20]:
        _resend_until_acked(sender, "lobby", key, key, idle=[listener])
    stall = redis_server.debug_sleep(2.5)
    for key in keys[20:40]:
        sender.say("lobby", key, key=key)
    sender.until(lambda: not stall.is_alive(), timeout=10 * SCALE, idle=[listener])
    for key in keys[20:60]:
        _resend_until_acked(sender, "lobby", key, key, idle=[listener])
    listener.until(lambda: len(listener.lines) >= 60, timeout=15 * SCALE)
    assert [m["text"] for m in listener.lines] == keys
    _verify(redis_server, listener.checker, ["lobby"])


def test_a_slow_reader_on_one_broker_repairs_what_it_missed_while_another_floods(
    cluster: Callable[..., BrokerProcess],
    members: Callable[..., Member],
    redis_server: RedisServer,
) -> None:
    a, b = cluster(), cluster("--pub-hwm", "20")
    sender, slow = members(a), members(b)
    sender.join("sender", ["lobby"])
    slow.join("slow", ["lobby"])
    slow.raw.sub.rcvhwm = 20
    keys = [f"k{n}" for n in range(600)]
    for key in keys:
        sender.say("lobby", key + " " + "x" * 3000, key=key)
    # slow reads nothing during the flood, but pings (a flood longer than
    # the 6 s --client-timeout would drop a silent member)
    sender.until(lambda: len(sender.checker.acks) == 600, timeout=20 * SCALE, idle=[slow])
    last = max(seq for _, seq in sender.checker.acks.values())
    slow.until(lambda: bool(slow.lines))  # now it reads: it lost some to the high-water marks
    assert len(slow.lines) < 600
    # what it lost, in the middle or at the end (whatever B still relays is
    # not read), comes from history: then it has every line, none twice
    _repair(slow, "lobby", last)
    assert len(slow.checker.repaired["slow"]["lobby"]) > 0
    _verify(redis_server, slow.checker, ["lobby"])


def _run_broker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            script("chat-broker"),
            "--router",
            "tcp://127.0.0.1:*",
            "--pub",
            "tcp://127.0.0.1:*",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30 * SCALE,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_start_up_refuses_an_unreachable_or_evicting_redis_in_one_line(
    redis_server: RedisServer,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"redis://:secret@127.0.0.1:{port}/0"
    out = _run_broker("--engine", url)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1, out.stderr
    assert f"127.0.0.1:{port}" in out.stderr and "secret" not in out.stderr
    assert _run_broker("--engine", "redis://").returncode == 2
    redis_server.client().config_set("maxmemory-policy", "allkeys-lru")
    out = _run_broker("--engine", redis_server.url)
    assert out.returncode == 1
    assert "maxmemory-policy" in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_start_up_warns_without_aof(
    redis_server: RedisServer, cluster: Callable[..., BrokerProcess]
) -> None:
    redis_server.client().config_set("appendonly", "no")
    redis_server.client().config_set("save", "")
    broker = cluster()
    assert "AOF" in broker.wait_for_log("WARNING")


def test_a_client_of_a_killed_broker_resumes_on_another_with_its_nick_and_rooms(
    cluster: Callable[..., BrokerProcess],
    members: Callable[..., Member],
    zmq_ctx: zmq.Context[zmq.Socket[bytes]],
    redis_server: RedisServer,
) -> None:
    a, b = cluster("--engine-lease", "2"), cluster("--engine-lease", "2")
    alice, bob = members(a), members(b)
    welcome = alice.join("alice", ["lobby"])
    bob.join("bob", ["lobby"])
    _resend_until_acked(alice, "lobby", "one", "k1")
    a.proc.kill()
    a.proc.wait(5)
    # alice's client fails over to B with its session token (§5.3)
    moved = members(b)
    moved.name = "alice"
    answer = moved.raw.hello("alice", ["lobby"], resume=welcome["session"])
    assert answer["type"] == "welcome" and answer["session"] == welcome["session"]
    moved.raw.subscribe_after_welcome(answer, ["lobby"])
    joined = moved.raw.reply(joined_to("lobby"))
    assert "alice" in joined["members"]
    _resend_until_acked(moved, "lobby", "one", "k1")  # a duplicate: same seq
    _resend_until_acked(moved, "lobby", "two", "k2")
    bob.until(lambda: [m["text"] for m in bob.lines] == ["one", "two"])
    bob.collect(2.5)  # past A's lease: the reaper finds nothing of alice's
    assert not [n for n in bob.notices if n.get("nick") == "alice"]
    bob.raw.send({"type": "who", "room": "lobby"})
    assert sorted(bob.raw.reply_of("who")["members"]) == ["alice", "bob"]
    _verify(redis_server, bob.checker, ["lobby"])
