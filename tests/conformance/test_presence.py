"""PROTOCOL.md "Room topics" and "Away": additions within version 1 (§9)."""

from __future__ import annotations

from tests.conformance.conftest import JoinFactory
from tests.conformance.rawchat import QUIET, joined_to, unique_room


def test_a_topic_is_broadcast_kept_and_shown_to_newcomers(chat: JoinFactory) -> None:
    room = unique_room("topics")
    setter, watcher = chat("setter", rooms=[room]), chat("watcher", rooms=[room])
    setter.send({"type": "topic", "room": room, "text": "  what we do \x1b[2J "})
    for client in (setter, watcher):
        _, notice = client.broadcast(lambda m: m.get("type") == "topic")
        assert notice["room"] == room and notice["text"] == "what we do \x1b[2J"
        assert notice["nick"] == setter.welcome["nick"]  # type: ignore[index]
        assert isinstance(notice["ts"], float | int)
        assert "seq" not in notice, "a topic is not a line"
    newcomer = chat("newcomer", rooms=[unique_room("topics2")])
    setter.send({"type": "topic", "room": room})
    answer = setter.reply_of("topic")
    assert answer["text"] == "what we do \x1b[2J" and answer["nick"] == setter.welcome["nick"]  # type: ignore[index]
    assert newcomer.join_room(room)["topic"] == "what we do \x1b[2J"
    # Clearing it.
    watcher.send({"type": "topic", "room": room, "text": ""})
    _, cleared = setter.broadcast(lambda m: m.get("type") == "topic")
    assert cleared["text"] == ""
    watcher.send({"type": "topic", "room": room})
    assert watcher.reply_of("topic")["text"] == ""
    for client in (setter, watcher, newcomer):
        client.bye()


def test_topic_rules(chat: JoinFactory) -> None:
    room = unique_room("rules")
    member = chat("member", rooms=[room])
    member.send({"type": "topic", "room": unique_room("elsewhere"), "text": "x"})
    assert member.error()["code"] == "not_in_room"
    member.send({"type": "topic", "room": room, "text": "é" * 257})  # 514 bytes
    assert member.error()["code"] == "text_too_long"
    member.send({"type": "topic", "room": "Not A Room!"})
    assert member.error()["code"] == "room_invalid"
    member.send({"type": "topic", "room": room, "text": "é" * 256})  # 512 bytes: fits
    _, notice = member.broadcast(lambda m: m.get("type") == "topic")
    assert notice["text"] == "é" * 256
    member.bye()


def test_away_is_announced_listed_and_answered_once(chat: JoinFactory) -> None:
    room = unique_room("away")
    away, friend = chat("away", rooms=[room]), chat("friend", rooms=[room])
    away_nick = away.welcome["nick"]  # type: ignore[index]
    away.send({"type": "away", "text": " gone \x07fishing "})
    assert away.reply_of("away") == {"type": "away", "nick": away_nick, "text": "gone \x07fishing"}
    _, notice = friend.broadcast(lambda m: m.get("type") == "away")
    assert (notice["room"], notice["nick"], notice["text"]) == (room, away_nick, "gone \x07fishing")
    friend.send({"type": "who", "room": room})
    who = friend.reply_of("who")
    assert who["away"] == {away_nick: "gone \x07fishing"}
    late = chat("late", rooms=[room])
    late.send({"type": "who", "room": room})
    assert late.reply_of("who")["away"] == {away_nick: "gone \x07fishing"}
    for n in range(2):
        friend.send({"type": "msg", "to": away_nick, "text": f"there? {n}"})
        assert away.reply(lambda m: m.get("type") == "private")["text"] == f"there? {n}"
        friend.reply(lambda m: m.get("type") == "private")
    assert friend.reply_of("away") == {
        "type": "away",
        "nick": away_nick,
        "text": "gone \x07fishing",
    }
    friend.watch(QUIET)
    assert not [m for m in friend.replies if m.get("type") == "away"], "once, not per line"
    # Back: announced, listed as here, and private lines get no answer.
    away.send({"type": "away"})
    assert away.reply_of("away")["text"] == ""
    _, back = friend.broadcast(lambda m: m.get("type") == "away" and m.get("text") == "")
    assert back["nick"] == away_nick
    friend.send({"type": "who", "room": room})
    assert friend.reply_of("who").get("away", {}) == {}
    friend.send({"type": "msg", "to": away_nick, "text": "welcome back"})
    friend.reply(lambda m: m.get("type") == "private")
    friend.watch(QUIET)
    assert not [m for m in friend.replies if m.get("type") == "away"]
    away.send({"type": "away", "text": "x" * 257})
    assert away.error()["code"] == "text_too_long"
    for client in (away, friend, late):
        client.bye()


def test_joined_lists_who_is_away(chat: JoinFactory) -> None:
    room = unique_room("awayjoin")
    away = chat("sleepy", rooms=[room])
    away.send({"type": "away", "text": "zzz"})
    away.reply_of("away")
    newcomer = chat("fresh", rooms=[unique_room("first")])
    joined = newcomer.join_room(room)
    assert joined_to(room)(joined)
    assert joined["away"] == {away.welcome["nick"]: "zzz"}  # type: ignore[index]
    for client in (away, newcomer):
        client.bye()
