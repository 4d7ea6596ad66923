"""The client library's edges: refused and unreachable joins leave nothing
behind (no unretrieved futures, no lost lines at the end of input)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import BrokerConfig, BrokerServer
from client import AsyncClient, BrokerUnreachable, Client
from client import events as ev
from client.link import reachable
from client.outbox import RATE_LIMITED_RETRIES
from client.session import ClientSession, State
from protocol import Ack, Error, Joined, JoinNotice, JoinsNotice, ProtocolError, Rename, Say
from tests.conftest import SCALE, InProcessBroker, script, spawn_broker, wait_for, welcome

_REFUSED_THEN_UNREACHABLE = textwrap.dedent(
    """
    import asyncio, gc, sys
    from client import AsyncClient, BrokerUnreachable, JoinRefused

    async def main(server):
        client = AsyncClient(server, "x")
        try:
            await client.connect("server")
        except JoinRefused as exc:
            print("refused", exc.code)
        await client.close()
        client = AsyncClient("tcp://127.0.0.1:9", "x")
        try:
            await client.connect(timeout=0.3)
        except BrokerUnreachable:
            print("unreachable")
        await client.close()

    asyncio.run(main(sys.argv[1]))
    gc.collect()
    """
)


def test_failed_joins_leave_no_unretrieved_exception(broker: InProcessBroker) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-c", _REFUSED_THEN_UNREACHABLE, broker.router],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.stdout.split() == ["refused", "nick_invalid", "unreachable"]
    assert "never retrieved" not in result.stderr, result.stderr


# --- nothing typed is lost at the end of input -------------------------------------


def _json_client(server: str, nick: str, stdin: str) -> list[dict[str, object]]:
    """Run ``chat-client --json`` with all of ``stdin`` at once; its events."""
    result = subprocess.run(
        [script("chat-client"), "--json", "--backlog", "0", "--server", server, "--nick", nick],
        input=stdin.encode(),
        capture_output=True,
        timeout=30 * SCALE,
    )
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_lines_after_a_join_at_the_end_of_input_are_delivered() -> None:
    broker = spawn_broker("--client-timeout", "3")
    listener = Client(broker.router, "listener", "ops")
    try:
        listener.connect()
        events = _json_client(broker.router, "scripty", "/join ops\nhello ops\n")
        assert [e["type"] for e in events][:2] == ["welcome", "joined"]
        assert not [e for e in events if e["type"] == "error"]
        line = wait_for(listener, ev.Message, lambda e: e.nick == "scripty")
        assert (line.room, line.text) == ("ops", "hello ops")
    finally:
        listener.close()
        broker.stop()


def test_a_paste_over_the_flood_limit_is_paced_not_refused() -> None:
    # The broker's defaults: 5 lines a second, bursts of 10.
    broker = spawn_broker("--client-timeout", "3")
    listener = Client(broker.router, "listener")
    try:
        listener.connect()
        pasted = [f"pasted line {n}" for n in range(15)]
        events = _json_client(broker.router, "paster", "".join(f"{t}\n" for t in pasted))
        assert not [e for e in events if e["type"] == "error"]
        heard = [wait_for(listener, ev.Message, lambda e: e.nick == "paster").text for _ in pasted]
        assert heard == pasted
    finally:
        listener.close()
        broker.stop()


def test_lines_that_cannot_be_delivered_before_closing_are_reported() -> None:
    broker = spawn_broker("--client-timeout", "3")

    async def scenario() -> list[ev.Event]:
        client = AsyncClient(broker.router, "stranded", backlog=0)
        await client.connect(timeout=10 * SCALE)
        broker.stop(signal.SIGKILL)  # gone without a word: the line can't be acked
        key = await client.say("into the void")
        await client.close(settle=0.5)
        leftovers = [event async for event in client]
        assert any(isinstance(e, ev.Error) and e.key == key for e in leftovers)
        return leftovers

    try:
        leftovers = asyncio.run(scenario())
        [error] = [e for e in leftovers if isinstance(e, ev.Error)]
        assert (error.code, error.text) == ("not_delivered", "into the void")
    finally:
        broker.stop()


# --- the session core: reconnecting, rejoin notices --------------------------------


def _session_in() -> ClientSession:
    """Joined to lobby (with bob) on a broker allowing 5 lines a second, bursts of 10."""
    session = ClientSession("me", ["lobby"], backlog=0)
    session.hello(0.0)
    session.on_reply(welcome(rate=5.0, burst=10), 0.0)
    session.on_reply(Joined(room="lobby", seq=0, members=["me", "bob"]), 0.0)
    session.take_output()
    return session


def test_commands_while_reconnecting_say_so_in_plain_words() -> None:
    session = _session_in()
    session.tick(100.0)  # the broker has been silent far too long
    assert session.state is State.RECONNECTING
    for command in (lambda: session.join("ops"), lambda: session.who(None), session.list_rooms):
        with pytest.raises(ProtocolError) as caught:
            command()
        assert caught.value.code == "not_joined"
        assert "reconnecting" in caught.value.message
    # Chat lines are different: they are kept and sent once back.
    session.say("kept for later")
    assert session.busy


def test_someone_already_here_rejoining_is_not_announced_again() -> None:
    session = _session_in()
    notice = JoinNotice(room="lobby", nick="bob", ts=1.0)
    assert session.on_broadcast(notice, 1.0) == []
    newcomer = JoinNotice(room="lobby", nick="carol", ts=1.0)
    assert session.on_broadcast(newcomer, 1.0) == [ev.Join(room="lobby", nick="carol", ts=1.0)]


def test_a_joins_notice_announces_each_newcomer_once() -> None:
    session = _session_in()  # in lobby: us ("me") and bob
    storm = JoinsNotice(room="lobby", nicks=["carol", "ME", "bob", "dave"], ts=2.0)
    assert session.on_broadcast(storm, 2.0) == [
        ev.Join(room="lobby", nick="carol", ts=2.0),
        ev.Join(room="lobby", nick="dave", ts=2.0),
    ]
    assert {"carol", "dave"} <= set(session.members["lobby"])
    assert session.on_broadcast(storm, 3.0) == []  # heard again: nothing new


def test_a_line_refused_as_rate_limited_is_sent_again_then_reported() -> None:
    session = _session_in()  # 5 lines a second, bursts of 10
    key = session.say("hello")
    (first,) = session.take_output().requests
    refused = Error(code="rate_limited", message="slow down", req="say", key=key, room="lobby")
    now = 1.0
    for attempt in range(RATE_LIMITED_RETRIES):
        # Not the line's fault: nothing is reported, and it waits its turn.
        assert session.on_reply(refused, now) == []
        assert session.busy
        assert not [r for r in session.take_output().requests if isinstance(r, Say)]
        resent: list[object] = []
        while not resent:
            now += 0.05
            session.tick(now)
            resent = [r for r in session.take_output().requests if isinstance(r, Say)]
            assert now < 10 * (attempt + 1), "the refused line was never sent again"
        assert resent == [first]  # the same line, the same key
    # Refused once more: reported with its text, so nothing is lost silently.
    (error,) = session.on_reply(refused, now)
    assert isinstance(error, ev.Error) and (error.code, error.text, error.key) == (
        "rate_limited",
        "hello",
        key,
    )
    assert not session.busy


def test_an_ack_after_a_rate_limited_retry_settles_the_line() -> None:
    session = _session_in()
    key = session.say("hello")
    session.take_output()
    refused = Error(code="rate_limited", message="slow down", req="say", key=key, room="lobby")
    assert session.on_reply(refused, 1.0) == []
    session.tick(3.0)
    assert [r.key for r in session.take_output().requests if isinstance(r, Say)] == [key]
    assert session.on_reply(Ack(key=key, id="b-1", room="lobby", seq=1), 3.1) == []
    assert not session.busy


def test_lines_over_the_brokers_burst_wait_their_turn_in_order() -> None:
    session = _session_in()  # the broker allows 5 lines a second, bursts of 10
    keys = [session.say(f"line {n}") for n in range(15)]
    sent = [r.key for r in session.take_output().requests if isinstance(r, Say)]
    assert sent == keys[:10]  # the broker's whole burst
    now = 0.0
    while len(sent) < 15:
        now += 0.05
        session.tick(now)
        sent += [r.key for r in session.take_output().requests if isinstance(r, Say)]
        assert now < 5, "paced lines never went"
    assert sent == keys
    assert now >= 5 / 5 - 0.05  # five more lines at 5 a second


# --- JSON mode output is safe to print and to split into lines --------------------

_UNSAFE = {0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


@settings(max_examples=300)
@given(st.text())
def test_json_events_escape_every_control_and_separator(text: str) -> None:
    message = ev.Message(room="lobby", nick="x", text=text, ts=1.0, id="i", seq=1)
    line = ev.encode_event(message).decode("utf-8")
    assert len(line.splitlines()) == 1
    assert not [c for c in line if ord(c) < 0x20 or ord(c) in _UNSAFE]
    assert json.loads(line)["text"] == text


# --- endpoints --------------------------------------------------------------------


def test_a_bad_server_endpoint_is_refused_before_any_socket() -> None:
    for endpoint in ("foo", "tcp://127.0.0.1:99999", "tcp://*:*"):
        with pytest.raises(ProtocolError) as caught:
            Client(endpoint, "x")
        assert caught.value.code == "bad_endpoint"
    result = subprocess.run(
        [script("chat-client"), "--json", "--nick", "x", "--server", "foo"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--server: bad endpoint 'foo'" in result.stderr and "Traceback" not in result.stderr


def test_an_unusable_pub_endpoint_in_the_welcome_fails_the_join_clearly() -> None:
    # A broker (not ours: ours refuses such a flag) that advertises nonsense.
    server = BrokerServer(
        "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", BrokerConfig(), advertised_pub="tcp://*:*"
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = Client(server.router_endpoint, "x")
        try:
            with pytest.raises(BrokerUnreachable) as caught:
                client.connect(timeout=10 * SCALE)
            assert "cannot subscribe" in str(caught.value) and "--pub" in str(caught.value)
        finally:
            client.close()
        # The same broker works for a client told where to subscribe.
        with Client(server.router_endpoint, "y", pub=server.pub_endpoint) as fine:
            assert fine.nick == "y"
    finally:
        server.stop()
        thread.join(5)


@pytest.mark.parametrize(
    ("advertised", "server", "expected"),
    [
        ("tcp://*:5556", "tcp://[::1]:5555", "tcp://[::1]:5556"),
        ("tcp://0.0.0.0:5556", "tcp://chat.example.org:5555", "tcp://chat.example.org:5556"),
        ("tcp://10.0.0.1:5556", "tcp://chat.example.org:5555", "tcp://10.0.0.1:5556"),
        ("tcp://*:*", "tcp://h:1", "tcp://*:*"),  # left for check_endpoint to refuse
    ],
)
def test_a_wildcard_pub_host_becomes_the_host_of_the_router(
    advertised: str, server: str, expected: str
) -> None:
    assert reachable(advertised, server) == expected


def test_rejoining_every_room_after_a_restart_is_one_reconnected_event() -> None:
    session = _session_in()  # in lobby with bob
    session.join("ops")
    session.on_reply(Joined(room="ops", seq=0, members=["me", "bob"]), 0.5)
    session.tick(100.0)  # silence: reconnecting
    session.tick(200.0)  # a new hello goes out
    events = session.on_reply(welcome(session="new", broker="b2"), 200.0)
    events += session.on_reply(Joined(room="lobby", seq=0, members=["me"]), 200.0)
    events += session.on_reply(Joined(room="ops", seq=0, members=["me"]), 200.0)
    assert events == [ev.Connection(state="reconnected", restarted=True, broker="b2")]
    # Bob comes back to the restarted broker after us: not news.
    assert session.on_broadcast(JoinNotice(room="ops", nick="bob", ts=2.0), 200.0) == []


def test_renaming_to_the_same_name_is_refused_locally_but_a_case_change_is_not() -> None:
    session = _session_in()
    with pytest.raises(ProtocolError) as caught:
        session.rename("me")
    assert caught.value.code == "nick_taken" and "already" in caught.value.message
    session.rename("Me")
    assert [r for r in session.take_output().requests if isinstance(r, Rename)] == [
        Rename(nick="Me")
    ]
