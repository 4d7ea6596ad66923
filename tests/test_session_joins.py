"""client/joins.py and client/reconnect.py: rooms being joined, and when to
say hello again."""

from __future__ import annotations

from client.joins import PREJOIN_LIMIT, Joins
from client.reconnect import AFTER_SHUTDOWN, BACKOFF, Retry
from protocol import ChatMessage, JoinNotice


def _line(seq: int, room: str = "ops") -> ChatMessage:
    return ChatMessage(room=room, nick="bob", text="hi", ts=1.0, id=f"i{seq}", seq=seq)


def test_broadcasts_of_a_room_being_joined_are_held_until_joined() -> None:
    joins = Joins()
    assert joins.begin("ops") == 1
    assert joins.begin("ops") is None  # already being joined
    assert joins.hold(_line(1))
    assert not joins.hold(_line(1, "lobby"))  # not being joined: not ours to hold
    held, again, sync = joins.done("ops")
    assert (held, again, sync) == ([_line(1)], False, 1)
    assert "ops" not in joins and not joins


def test_a_rejoin_holds_the_rooms_we_were_in_too() -> None:
    joins = Joins()
    joins.expect(["lobby", "ops"], again={"lobby"})
    notice = JoinNotice(room="lobby", nick="bob", ts=1.0)
    assert joins.hold(notice)
    assert joins.rejoining("lobby") and not joins.rejoining("ops")
    assert joins.done("lobby") == ([notice], True, None)
    assert joins  # ops still to come
    assert joins.refused("ops") is False
    assert not joins


def test_holding_is_bounded_and_a_lost_connection_forgets_everything() -> None:
    joins = Joins()
    joins.begin("ops")
    for seq in range(PREJOIN_LIMIT + 5):
        joins.hold(_line(seq))
    held, _, _ = joins.done("ops")
    assert len(held) == PREJOIN_LIMIT  # the rest is repaired from history
    joins.begin("ops")
    joins.lost()
    assert not joins and "ops" not in joins


def test_retry_schedule_after_silence_and_after_shutdown() -> None:
    retry = Retry(jitter=lambda: 0.5)  # a factor of exactly 1
    retry.start(10.0)
    assert retry.due(10.0) == 1  # at once, with fresh sockets
    assert retry.due(10.0 + BACKOFF[0] - 0.01) == 0
    assert retry.due(10.0 + BACKOFF[0]) == 2
    retry.start(20.0, shutdown=True)
    assert retry.due(20.0) == 0  # not into the broker that is closing
    assert retry.due(20.0 + AFTER_SHUTDOWN) == 1


def test_retry_waits_for_the_joins_after_a_welcome() -> None:
    retry = Retry(jitter=lambda: 0.5)
    retry.start(0.0)
    retry.due(0.0)
    retry.welcomed(1.0, wait=13.0)
    assert retry.due(13.0) == 0
    assert retry.due(14.0) == 1  # never joined: start over with fresh sockets
