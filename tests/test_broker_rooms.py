"""Rooms and membership in one broker (broker/rooms.py): pure, time as a parameter."""

from __future__ import annotations

from broker.actions import Publish, Send
from broker.history import MemoryHistory
from broker.rooms import LocalRooms
from broker.sessions import Session
from broker.topics import MemoryTopics, RoomTopic
from protocol import ChatMessage, Joined, JoinNotice, LeaveNotice, RoomInfo


def _session(nick: str, token: str | None = None) -> Session:
    return Session(identity=nick.encode(), nick=nick, token=token or f"t-{nick}", last_seen=0.0)


def _rooms() -> tuple[LocalRooms, MemoryHistory]:
    history = MemoryHistory()
    return LocalRooms(history, MemoryTopics()), history


def test_entering_tells_the_room_and_the_member_and_numbering_comes_from_the_store() -> None:
    rooms, history = _rooms()
    for seq in (1, 2, 3):
        history.append(
            ChatMessage(room="lobby", nick="x", text="t", ts=0.0, id=f"i{seq}", seq=seq), None
        )
    rooms.topics.set("lobby", RoomTopic(text="welcome", nick="x", ts=0.0))
    alice = _session("alice")
    actions = rooms.enter(alice, "lobby", 5.0)
    assert actions[0] == Publish(JoinNotice(room="lobby", nick="alice", ts=5.0))
    joined = actions[1]
    assert isinstance(joined, Send) and isinstance(joined.message, Joined)
    assert joined.message.seq == 3
    assert joined.message.members == ["alice"]
    assert joined.message.epoch == history.epoch
    assert joined.message.topic == "welcome"
    assert alice.rooms == {"lobby"}
    # entering again (a resume's sync) only tells the member, nobody else
    [again] = rooms.enter(alice, "lobby", 6.0)
    assert isinstance(again, Send) and isinstance(again.message, Joined)


def test_members_in_joining_order_and_away_maps_follow_renames_and_away() -> None:
    rooms, _ = _rooms()
    alice, bob = _session("alice"), _session("bob")
    rooms.enter(alice, "lobby", 1.0)
    rooms.enter(bob, "lobby", 2.0)
    assert rooms.who("lobby").members == ["alice", "bob"]
    bob.away = "lunch"
    rooms.away_changed(bob)
    assert rooms.who("lobby").away == {"bob": "lunch"}
    old = alice.nick
    alice.nick = "alicia"
    rooms.renamed(alice, old)
    assert rooms.joined("lobby").members == ["alicia", "bob"]
    assert rooms.who("nowhere").members == []


def test_leaving_tells_the_room_and_an_empty_room_goes_but_keeps_its_numbering() -> None:
    rooms, history = _rooms()
    alice = _session("alice")
    rooms.enter(alice, "lobby", 1.0)
    rooms.by_name["lobby"].seq = 7  # lines numbered meanwhile (broker/ledger.py)
    history.append(ChatMessage(room="lobby", nick="alice", text="t", ts=1.0, id="i", seq=7), None)
    assert rooms.listing() == [RoomInfo(room="lobby", members=1)]
    assert rooms.leave(alice, "lobby", "part", 2.0) == [
        Publish(LeaveNotice(room="lobby", nick="alice", reason="part", ts=2.0))
    ]
    assert alice.rooms == set()
    assert rooms.listing() == []
    bob = _session("bob")
    [_, joined] = rooms.enter(bob, "lobby", 3.0)
    assert joined.message.seq == 7  # type: ignore[union-attr]


def test_rooms_are_listed_by_name_with_their_member_counts() -> None:
    rooms, _ = _rooms()
    rooms.enter(_session("a"), "zoo", 1.0)
    rooms.enter(_session("b"), "art", 1.0)
    rooms.enter(_session("c"), "zoo", 1.0)
    assert rooms.listing() == [RoomInfo(room="art", members=1), RoomInfo(room="zoo", members=2)]
