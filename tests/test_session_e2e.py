"""The session under faults that need real processes (issue 12): a paused
broker filling the client's send queue, graceful and abrupt restarts, a
request in flight as the broker dies. Each runs ``chat-broker`` itself."""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from client import AsyncClient, Client
from client import events as ev
from protocol import Request
from tests.conftest import SCALE, BrokerProcess, spawn_broker, wait_for
from tests.jsonclient import start_json_client


class _Restarts:
    """A broker (``chat-broker args``) the test stops, and the one it starts
    again on the same ports; :meth:`stop` ends whichever still run."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.first = spawn_broker(*args)
        self.second: BrokerProcess | None = None

    def again(self, *args: str) -> BrokerProcess:
        """The new broker on the first one's ports (``args``: other flags)."""
        self.second = spawn_broker(
            *(args or self.args), router=self.first.router, pub=self.first.pub
        )
        return self.second

    def stop(self) -> None:
        self.first.stop(signal.SIGKILL)
        if self.second is not None:
            self.second.stop()


@contextmanager
def _alice_through_a_restart(*args: str) -> Iterator[tuple[_Restarts, Client]]:
    """``alice`` connected to a broker (``args``) the test restarts."""
    brokers = _Restarts(*args)
    alice = Client(brokers.first.router, "alice")
    try:
        alice.connect()
        yield brokers, alice
    finally:
        alice.close()
        brokers.stop()


def _still_talks(client: Client) -> None:
    """A line said now is shown back: the session works again."""
    client.say("back")
    assert wait_for(client, ev.Message).text == "back"


def _states(client: Client, until: str, timeout: float = 20.0) -> list[str]:
    """Connection states seen until ``until`` (other events are skipped)."""
    seen: list[str] = []
    while until not in seen:
        seen.append(wait_for(client, ev.Connection, timeout=timeout).state)
    return seen


@pytest.mark.timeout(120)
def test_a_paused_broker_during_a_burst_loses_nothing_and_leaves_no_exception_unretrieved() -> None:
    # A long client timeout: the session outlives the pause; the send queue
    # (ZeroMQ's high-water mark, then the kernel's buffers) does not.
    broker = spawn_broker("--client-timeout", "30", "--max-rate", "0", "--history-lines", "5000")
    count, text = 2500, "x" * 3500
    unretrieved: list[dict[str, Any]] = []

    async def scenario() -> tuple[list[int], int]:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: unretrieved.append(ctx))
        alice = AsyncClient(broker.router, "alice")
        bob = AsyncClient(broker.router, "bob")
        refused = 0
        session = alice.session
        original = session.not_sent

        def counting(requests: list[Request], now: float) -> None:
            nonlocal refused
            refused += 1
            original(requests, now)

        session.not_sent = counting  # type: ignore[method-assign]
        await alice.connect()
        await bob.connect()
        broker.proc.send_signal(signal.SIGSTOP)
        try:
            for n in range(count):
                await alice.say(f"{n} {text}")
            deadline = time.monotonic() + 30 * SCALE
            while refused == 0:  # the queue is full: the fault is staged
                assert time.monotonic() < deadline, "the send queue never filled"
                await asyncio.sleep(0.05)
        finally:
            broker.proc.send_signal(signal.SIGCONT)
        assert await alice.settle(60 * SCALE), f"{alice.pending} lines never acknowledged"
        heard: list[int] = []
        while len(heard) < count:
            event = await bob.next_event(30 * SCALE)
            if isinstance(event, ev.Message) and event.nick == "alice":
                heard.append(int(event.text.split()[0]))
        await alice.close()
        await bob.close()
        gc.collect()
        await asyncio.sleep(0)
        return heard, refused

    try:
        heard, refused = asyncio.run(scenario())
    finally:
        broker.stop()
    assert refused > 0
    assert heard == list(range(count))  # each once, in order
    assert [c for c in unretrieved if "never retrieved" in str(c.get("message"))] == []


@pytest.mark.timeout(60)
def test_a_graceful_restart_is_rejoined_promptly_and_said() -> None:
    # Heartbeats of 2 s: the old client waited three of them after a shutdown.
    with _alice_through_a_restart("--client-timeout", "8") as (brokers, alice):
        brokers.first.stop(signal.SIGTERM)
        wait_for(alice, ev.Shutdown)
        brokers.again()
        up = time.monotonic()
        assert _states(alice, "reconnected") == ["reconnecting", "reconnected"]
        # Not a performance target: the old client needed over 6 s (three
        # heartbeats) here; promptly means well under that.
        assert time.monotonic() - up < 3 * SCALE
        _still_talks(alice)


@pytest.mark.timeout(60)
def test_a_restart_within_a_second_is_told_as_a_reconnect() -> None:
    with _alice_through_a_restart("--client-timeout", "4") as (brokers, alice):
        brokers.first.stop(signal.SIGKILL)
        brokers.again()
        assert _states(alice, "reconnected") == ["reconnecting", "reconnected"]
        _still_talks(alice)


@pytest.mark.timeout(60)
def test_a_killed_broker_is_noticed_at_once_not_after_three_silent_heartbeats() -> None:
    # 5 s heartbeats: silence would take 15 s; the connection the kernel
    # closed for the killed broker tells at once (client/handshake.py).
    heartbeat = 5.0
    with _alice_through_a_restart("--heartbeat", "5", "--client-timeout", "15") as (brokers, alice):
        brokers.first.stop(signal.SIGKILL)
        killed = time.monotonic()
        assert wait_for(alice, ev.Connection, timeout=heartbeat).state == "reconnecting"
        took = time.monotonic() - killed
        assert took < heartbeat * SCALE, f"noticed after {took:.1f} s"
        brokers.again()  # and back on the restarted broker as before
        assert _states(alice, "reconnected") == ["reconnected"]
        _still_talks(alice)


@pytest.mark.timeout(60)
def test_someone_gone_while_the_broker_was_down_is_shown_leaving() -> None:
    # Found by QA: bob, gone while the broker restarted, was never shown
    # leaving; he still showed in the nick list.
    with _alice_through_a_restart("--client-timeout", "2") as (brokers, alice):
        bob = start_json_client(brokers.first.router, "bob")
        try:
            wait_for(alice, ev.Join, lambda e: e.nick == "bob")
            brokers.first.stop(signal.SIGKILL)
        finally:
            bob.stop()  # killed too: never back
        brokers.again()
        assert _states(alice, "reconnected")[-1] == "reconnected"
        # after the broker's timeout (2 s) and three heartbeats (0.5 s each)
        gone = wait_for(alice, ev.Leave, lambda e: e.nick == "bob", timeout=15)
        assert gone.meanwhile and gone.reason == "unknown"


@pytest.mark.timeout(60)
def test_a_who_sent_as_the_broker_dies_is_answered_after_the_rejoin() -> None:
    with _alice_through_a_restart("--client-timeout", "4") as (brokers, alice):
        brokers.first.proc.send_signal(signal.SIGSTOP)  # it takes the request, never answers
        alice.who()
        brokers.first.stop(signal.SIGKILL)
        brokers.again()
        answer = wait_for(alice, ev.Who, timeout=20)
        assert answer.members == ["alice"]


def test_requests_with_wait_return_once_answered_in_order(connect) -> None:  # type: ignore[no-untyped-def]
    from protocol import RequestFailed

    alice = connect("alice")
    connect("bob")
    assert alice.join("ops", wait=True) == "ops"
    assert alice.rooms == ["lobby", "ops"]
    assert alice.part("ops", wait=True) == "ops"  # the join was done: no not_in_room
    assert alice.rooms == ["lobby"]
    assert sorted(alice.who("lobby", wait=True) or []) == ["alice", "bob"]
    alice.history(10, wait=True)
    with pytest.raises(RequestFailed) as refused:
        alice.rename("bob", wait=True)
    assert refused.value.code == "nick_taken"
    assert alice.topic("release friday", wait=True) == "release friday"  # our broadcast
    assert alice.topic(wait=True) == "release friday"  # the reply
    alice.away("lunch", wait=True)
    alice.away(wait=True)
    assert alice.settle(5 * SCALE)
    assert alice.pending == 0


@pytest.mark.timeout(90)
def test_a_broker_back_with_another_history_is_a_reset_not_a_gap(tmp_path: Path) -> None:
    # The history file was replaced (a restore, a lost disk): the new one
    # numbers lobby up to 10, above the 3 lines bob saw. Only the epoch tells.
    other = spawn_broker("--max-rate", "0", "--history", str(tmp_path / "other.sqlite3"))
    carol = Client(other.router, "carol", backlog=0)
    try:
        carol.connect()
        for n in range(10):
            carol.say(f"elsewhere {n}")
        assert carol.settle(10 * SCALE)
    finally:
        carol.close()
        other.stop()
    flags = ("--client-timeout", "3", "--max-rate", "0", "--history")
    brokers = _Restarts(*flags, str(tmp_path / "h.sqlite3"))
    router = brokers.first.router
    alice, bob = Client(router, "alice", backlog=0), Client(router, "bob", backlog=0)
    try:
        alice.connect()
        bob.connect()
        for n in range(3):
            alice.say(f"before {n}")
        wait_for(bob, ev.Message, lambda e: e.text == "before 2")
        brokers.first.stop(signal.SIGKILL)
        brokers.again(*flags, str(tmp_path / "other.sqlite3"))
        reset = wait_for(bob, ev.Missed, timeout=20)
        assert reset.reset and reset.room == "lobby"
        wait_for(alice, ev.Connection, lambda e: e.state == "reconnected", timeout=20)
        alice.say("after")
        shown = wait_for(bob, ev.Message, timeout=10)
        assert (shown.text, shown.seq) == ("after", 11)  # nothing of the old numbering
    finally:
        alice.close()
        bob.close()
        brokers.stop()
