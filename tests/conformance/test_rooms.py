"""§4 say/join/part/who/rooms, §3 topics, §5 message broadcasts, §5.4 sequence numbers."""

from __future__ import annotations

from tests.conformance.conftest import JoinFactory
from tests.conformance.rawchat import QUIET, announces_join, unique_room


def is_text(text: str):  # type: ignore[no-untyped-def]
    """Matches the ``message`` broadcast carrying ``text``."""
    return lambda m: m.get("type") == "message" and m.get("text") == text


def test_lines_reach_every_member_stamped_and_numbered(chat: JoinFactory) -> None:
    room = unique_room("bcast")
    alice, bob, carol = (chat(n, [room]) for n in ("alice", "bob", "carol"))
    alice_nick = alice.welcome["nick"]  # type: ignore[index]
    seqs: list[int] = []
    for i in range(3):
        alice.send({"type": "say", "room": room, "text": f"line {i}"})
        for member in (alice, bob, carol):
            topic, line = member.broadcast(is_text(f"line {i}"))
            assert topic == f"room/{room}/".encode()
            assert line["room"] == room and line["nick"] == alice_nick
            assert isinstance(line["id"], str) and line["id"]
            assert isinstance(line["ts"], float | int)
            assert line.get("action", False) is False
            if member is bob:
                seqs.append(line["seq"])
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]


def test_a_client_cannot_speak_as_another(chat: JoinFactory) -> None:
    room = unique_room("spoof")
    mallory, victim = chat("mallory", [room]), chat("victim", [room])
    mallory.send({"type": "say", "room": room, "text": "spoofed", "nick": "victim"})
    _, line = victim.broadcast(is_text("spoofed"))
    assert line["nick"] == mallory.welcome["nick"]  # type: ignore[index]


def test_action_lines_are_marked(chat: JoinFactory) -> None:
    room = unique_room("me")
    client = chat("actor", [room])
    client.send({"type": "say", "room": room, "text": "waves", "action": True})
    _, line = client.broadcast(is_text("waves"))
    assert line["action"] is True


def test_lines_stay_in_their_room(chat: JoinFactory) -> None:
    here, there = unique_room("here"), unique_room("there")
    speaker = chat("speaker", [here])
    outsider = chat("outsider", [there])
    speaker.send({"type": "say", "room": here, "text": "only here"})
    speaker.broadcast(is_text("only here"))
    outsider.watch(QUIET)
    assert not [m for _, m in outsider.broadcasts if m.get("text") == "only here"]


def test_room_names_are_canonical(chat: JoinFactory) -> None:
    room = unique_room("canon")
    client = chat("canon")
    joined = client.join_room(room)  # lower case already
    assert joined["room"] == room
    client.send({"type": "say", "room": "#" + room.upper(), "text": "shouting"})
    topic, line = client.broadcast(is_text("shouting"))
    assert (topic, line["room"]) == (f"room/{room}/".encode(), room)


def test_invalid_room_names_are_refused(chat: JoinFactory) -> None:
    client = chat("badroom")
    for name in ["", "has space", "x" * 33, "-dash", "caf\u00e9", "a/b"]:
        client.send({"type": "join", "room": name, "sync": 99})
        error = client.error()
        assert error["code"] == "room_invalid", name


def test_join_part_and_leave_notice(chat: JoinFactory) -> None:
    room = unique_room("jp")
    stayer = chat("stayer", [room])
    mover = chat("mover")
    mover_nick = mover.welcome["nick"]  # type: ignore[index]
    joined = mover.join_room(room)
    assert set(joined["members"]) == {stayer.welcome["nick"], mover_nick}  # type: ignore[index]
    stayer.broadcast(announces_join(mover_nick))
    mover.send({"type": "part", "room": room})
    assert mover.reply_of("parted") == {"type": "parted", "room": room}
    _, leave = stayer.broadcast(lambda m: m.get("type") == "leave" and m["nick"] == mover_nick)
    assert (leave["room"], leave["reason"]) == (room, "part")
    mover.send({"type": "say", "room": room, "text": "gone"})
    assert mover.error()["code"] == "not_in_room"
    mover.send({"type": "part", "room": room})
    assert mover.error()["code"] == "not_in_room"


def test_join_of_a_room_already_joined_answers_at_once(chat: JoinFactory) -> None:
    room = unique_room("again")
    client = chat("again", [room])
    client.send({"type": "join", "room": room, "sync": 42})  # no sync subscription needed
    assert client.reply_of("joined")["room"] == room


def test_who_and_rooms(chat: JoinFactory) -> None:
    room = unique_room("who")
    first, second = chat("first", [room]), chat("second", [room])
    first.send({"type": "who", "room": room})
    who = first.reply_of("who")
    names = [first.welcome["nick"], second.welcome["nick"]]  # type: ignore[index]
    assert who == {"type": "who", "room": room, "members": names}
    first.send({"type": "who", "room": unique_room("empty")})
    assert first.reply_of("who")["members"] == []
    first.send({"type": "rooms"})
    rooms = first.reply_of("rooms")["rooms"]
    assert {"room": room, "members": 2} in rooms
    listed = [r["room"] for r in rooms]
    assert listed == sorted(listed)


def test_renaming_tells_the_room(chat: JoinFactory) -> None:
    room = unique_room("nick")
    renamer, watcher = chat("renamer", [room]), chat("watcher", [room])
    old = renamer.welcome["nick"]  # type: ignore[index]
    new = old + "x"
    renamer.send({"type": "nick", "nick": new})
    assert renamer.reply_of("renamed") == {"type": "renamed", "old": old, "new": new}
    _, notice = watcher.broadcast(lambda m: m.get("type") == "nick")
    assert (notice["room"], notice["old"], notice["new"]) == (room, old, new)
    renamer.send({"type": "nick", "nick": watcher.welcome["nick"].upper()})  # type: ignore[index]
    assert renamer.error()["code"] == "nick_taken"
    renamer.send({"type": "nick", "nick": "server"})
    assert renamer.error()["code"] == "nick_invalid"
