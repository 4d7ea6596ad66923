"""§5.2 heartbeats, §5.6 leaving, §5.1 sync timeout."""

from __future__ import annotations

import pytest

from tests.conformance.conftest import ClientFactory, JoinFactory
from tests.conformance.rawchat import SCALE, unique_nick, unique_room


def test_ping_gets_pong_with_broker_id_and_room_seqs(chat: JoinFactory) -> None:
    room = unique_room("pong")
    client = chat("pinger", ["lobby", room])
    client.send({"type": "say", "room": room, "text": "one"})
    client.send({"type": "say", "room": room, "text": "two"})
    _, second = client.broadcast(lambda m: m.get("text") == "two")
    client.send({"type": "ping"})
    pong = client.reply_of("pong")
    assert pong["broker"] == client.welcome["broker"]  # type: ignore[index]
    assert set(pong["seqs"]) == {"lobby", room}
    assert pong["seqs"][room] == second["seq"]


def test_bye_gets_goodbye_and_a_leave_notice_with_reason_exit(chat: JoinFactory) -> None:
    room = unique_room("bye")
    leaver, stayer = chat("leaver", [room]), chat("stayer", [room])
    nick = leaver.welcome["nick"]  # type: ignore[index]
    assert leaver.bye() == {"type": "goodbye"}
    leaver.welcome = None
    _, leave = stayer.broadcast(lambda m: m.get("type") == "leave" and m["nick"] == nick)
    assert (leave["room"], leave["reason"]) == (room, "exit")
    leaver.send({"type": "ping"})
    assert leaver.error()["code"] == "not_joined"


def _short_timeout(welcome: dict[str, object]) -> float:
    """The broker's client timeout, or skip if it is too long to wait for."""
    timeout = float(welcome["timeout"])  # type: ignore[arg-type]
    if timeout > 5 * SCALE:
        pytest.skip(f"the broker's client timeout is {timeout} s: too long to wait for")
    return timeout


def test_silent_client_is_dropped_with_reason_timeout(raw_short: ClientFactory) -> None:
    room = unique_room("silent")
    watcher = raw_short()
    timeout = _short_timeout(watcher.join(unique_nick("watcher"), [room]))
    silent = raw_short()
    nick = unique_nick("silent")
    silent.join(nick, [room])
    silent.heartbeat = 0.0  # from now on it sends nothing; the watcher keeps pinging
    _, leave = watcher.broadcast(
        lambda m: m.get("type") == "leave" and m["nick"] == nick, timeout=2 * timeout + 2
    )
    assert (leave["room"], leave["reason"]) == (room, "timeout")
    silent.send({"type": "ping"})
    assert silent.error()["code"] == "not_joined"
    silent.welcome = None
    raw_short().join(nick)  # the nickname is free again


def test_sync_that_never_comes_times_out(raw_short: ClientFactory) -> None:
    client = raw_short()
    nick = unique_nick("nosync")
    welcome = client.hello(nick)
    assert welcome["type"] == "welcome"
    timeout = _short_timeout(welcome)
    # Never subscribe, but keep talking (§5.1): the broker gives up on the sync.
    client.heartbeat = min(0.5, timeout / 3)
    error = client.reply(lambda m: m.get("code") == "sync_timeout", timeout=2 * timeout + 2)
    assert (error["type"], error["req"]) == ("error", "hello")
    raw_short().join(nick)  # the nickname is free again
