"""Topics and away state in the broker core, no sockets (PROTOCOL.md "Room topics", "Away")."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import BrokerConfig, BrokerCore
from broker.topics import RoomTopic, SqliteTopics, TopicsUnavailable
from protocol import (
    Away,
    AwayNotice,
    AwayReply,
    ErrorCode,
    Join,
    Joined,
    Part,
    Rename,
    SendPrivate,
    Topic,
    TopicNotice,
    TopicReply,
    Who,
    WhoReply,
    decode_reply,
    encode,
    sync_topic,
)
from tests.test_broker_core import frames, join, only_error, published, sent


def make_core(topics: SqliteTopics | None = None) -> BrokerCore:
    config = BrokerConfig(client_timeout=10.0, heartbeat=2.0, max_rate=0.0)
    return BrokerCore(config, broker_id="b1", topics=topics)


def test_a_topic_is_set_broadcast_shown_on_joining_and_asked_for() -> None:
    core = make_core()
    join(core, b"A", "Alice")
    actions = core.handle(b"A", frames(Topic(room="lobby", text="  plans \x1b[2J ")), 3.0)
    # Trimmed, but otherwise kept as sent: escaping is the reader's job.
    assert published(actions) == [
        TopicNotice(room="lobby", text="plans \x1b[2J", nick="Alice", ts=3.0)
    ]
    _, actions = join(core, b"B", "Bob", now=4.0)
    (joined,) = sent(actions, b"B")
    assert isinstance(joined, Joined) and joined.topic == "plans \x1b[2J"
    reply = sent(core.handle(b"B", frames(Topic(room="#Lobby")), 5.0), b"B")
    assert reply == [TopicReply(room="lobby", text="plans \x1b[2J", nick="Alice", ts=3.0)]
    # Clearing: an empty text.
    assert published(core.handle(b"B", frames(Topic(room="lobby", text="")), 6.0)) == [
        TopicNotice(room="lobby", text="", nick="Bob", ts=6.0)
    ]
    assert sent(core.handle(b"B", frames(Topic(room="lobby")), 7.0), b"B") == [
        TopicReply(room="lobby", text="")
    ]


def test_only_members_set_a_topic_and_it_is_bounded() -> None:
    core = make_core()
    join(core, b"A", "Alice")
    error = only_error(core.handle(b"A", frames(Topic(room="elsewhere", text="x")), 1.0), b"A")
    assert error.code == ErrorCode.NOT_IN_ROOM
    error = only_error(core.handle(b"A", frames(Topic(room="lobby", text="x" * 513)), 1.0), b"A")
    assert error.code == ErrorCode.TEXT_TOO_LONG
    # Anyone may ask about a room they are not in (like who).
    assert sent(core.handle(b"A", frames(Topic(room="elsewhere")), 1.0)) == [
        TopicReply(room="elsewhere", text="")
    ]


def test_topics_survive_a_broker_restart(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    core = make_core(SqliteTopics(path))
    join(core, b"A", "Alice")
    core.handle(b"A", frames(Topic(room="lobby", text="kept")), 1.0)
    core.topics.close()
    core = make_core(SqliteTopics(path))
    _, actions = join(core, b"B", "Bob", now=2.0)
    (joined,) = sent(actions, b"B")
    assert isinstance(joined, Joined) and joined.topic == "kept"


def test_a_topic_the_store_cannot_keep_is_refused_as_unavailable(tmp_path: Path) -> None:
    topics = SqliteTopics(tmp_path / "t.sqlite3")
    core = make_core(topics)
    join(core, b"A", "Alice")
    topics._db.execute("PRAGMA query_only=1")  # every write now fails, as on a full disk
    with pytest.raises(TopicsUnavailable):
        topics.set("lobby", RoomTopic(text="x", nick="A", ts=0.0))
    error = only_error(core.handle(b"A", frames(Topic(room="lobby", text="x")), 1.0), b"A")
    assert error.code == ErrorCode.UNAVAILABLE
    assert topics.get("lobby").text == ""
    topics.close()


def test_away_is_announced_listed_and_answered_once_per_sender() -> None:
    core = make_core()
    join(core, b"A", "Alice")
    join(core, b"B", "Bob")
    join(core, b"C", "Carol")
    actions = core.handle(b"A", frames(Away(text="lunch \x07")), 2.0)
    assert sent(actions, b"A") == [AwayReply(nick="Alice", text="lunch \x07")]
    assert published(actions) == [AwayNotice(room="lobby", nick="Alice", text="lunch \x07", ts=2.0)]
    assert sent(core.handle(b"B", frames(Who(room="lobby")), 3.0)) == [
        WhoReply(room="lobby", members=["Alice", "Bob", "Carol"], away={"Alice": "lunch \x07"})
    ]

    def private(identity: bytes) -> list[object]:
        actions = core.handle(identity, frames(SendPrivate(to="alice", text="hi")), 4.0)
        return [m for m in sent(actions, identity) if isinstance(m, AwayReply)]

    assert private(b"B") == [AwayReply(nick="Alice", text="lunch \x07")]
    assert private(b"B") == [], "once, not on every line"
    assert private(b"C") == [AwayReply(nick="Alice", text="lunch \x07")]
    # A newcomer sees who is away in its joined reply.
    _, actions = join(core, b"D", "Dave")
    (joined,) = sent(actions, b"D")
    assert isinstance(joined, Joined) and joined.away == {"Alice": "lunch \x07"}
    # Back: announced, and private lines no longer answered.
    actions = core.handle(b"A", frames(Away()), 5.0)
    assert published(actions) == [AwayNotice(room="lobby", nick="Alice", text="", ts=5.0)]
    assert private(b"D") == []


def test_away_maps_follow_away_back_renames_parts_and_joins() -> None:
    # The core keeps each room's away map instead of walking the room on
    # every join; every change must show in the next joined and who.
    core = make_core()
    join(core, b"A", "Alice")
    join(core, b"B", "Bob")

    def joined_away(identity: bytes, nick: str, now: float) -> dict[str, str]:
        _, actions = join(core, identity, nick, now)
        (joined,) = sent(actions, identity)
        assert isinstance(joined, Joined)
        return joined.away

    assert joined_away(b"C", "Carol", 1.0) == {}
    core.handle(b"A", frames(Away(text="lunch")), 2.0)
    core.handle(b"B", frames(Away(text="gone")), 2.0)
    assert joined_away(b"D", "Dave", 2.0) == {"Alice": "lunch", "Bob": "gone"}
    core.handle(b"A", frames(Rename(nick="Alicia")), 3.0)
    assert joined_away(b"E", "Eve", 3.0) == {"Alicia": "lunch", "Bob": "gone"}
    core.handle(b"B", frames(Part(room="lobby")), 4.0)
    assert joined_away(b"J", "Jo", 4.0) == {"Alicia": "lunch"}
    core.handle(b"A", frames(Away()), 4.0)
    assert joined_away(b"F", "Fay", 4.0) == {}
    core.handle(b"F", frames(Away(text="afk")), 5.0)
    assert joined_away(b"G", "Gus", 5.0) == {"Fay": "afk"}
    join(core, b"H", "Hal", 5.0, rooms=["dev"])  # dev's map made: nobody away
    core.handle(b"F", frames(Join(room="dev", sync=1)), 5.0)  # Fay enters it, away
    core.subscribed(b"\x01" + sync_topic(core._sessions[b"F"].token, 1), 5.0)
    _, actions = join(core, b"I", "Ivy", 5.0, rooms=["dev"])
    assert [m.away for m in sent(actions, b"I") if isinstance(m, Joined)] == [{"Fay": "afk"}]
    assert sent(core.handle(b"G", frames(Who(room="lobby")), 6.0)) == [
        WhoReply(
            room="lobby",
            members=["Alicia", "Carol", "Dave", "Eve", "Jo", "Fay", "Gus"],
            away={"Fay": "afk"},
        )
    ]


def test_new_fields_are_left_out_when_empty_so_v1_clients_see_the_old_shapes() -> None:
    reply = Joined(room="lobby", seq=3, members=["a"])
    assert encode(reply) == b'{"type":"joined","room":"lobby","seq":3,"members":["a"]}'
    assert decode_reply([encode(reply)]) == reply
