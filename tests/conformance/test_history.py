"""§4 history, §5.4 sequence numbers, §5.5 idempotency keys and ack."""

from __future__ import annotations

import secrets

from tests.conformance.conftest import JoinFactory
from tests.conformance.rawchat import QUIET, RawClient, unique_room


def say_lines(client: RawClient, room: str, texts: list[str]) -> list[int]:
    """Say each line and return their sequence numbers, as broadcast."""
    for text in texts:
        client.send({"type": "say", "room": room, "text": text})
    return [client.broadcast(lambda m, t=t: m.get("text") == t)[1]["seq"] for t in texts]  # type: ignore[misc]


def test_joined_seq_and_history_replay(chat: JoinFactory) -> None:
    room = unique_room("hist")
    writer = chat("writer", [room])
    seqs = say_lines(writer, room, ["h1", "h2", "h3", "h4"])
    assert seqs == list(range(seqs[0], seqs[0] + 4))
    reader = chat("reader")
    joined = reader.join_room(room)
    assert joined["seq"] == seqs[-1]
    reader.send({"type": "history", "room": room, "after": joined["seq"] - 4})
    reply = reader.reply_of("history")
    assert reply["room"] == room
    assert reply.get("missed", 0) == 0
    assert reply["seq"] == seqs[-1]
    lines = reply["messages"]
    assert [m["text"] for m in lines] == ["h1", "h2", "h3", "h4"]
    assert [m["seq"] for m in lines] == seqs
    assert all(m["type"] == "message" and m["room"] == room for m in lines)
    assert {m["nick"] for m in lines} == {writer.welcome["nick"]}  # type: ignore[index]


def test_history_range_and_limit(chat: JoinFactory) -> None:
    room = unique_room("range")
    client = chat("ranger", [room])
    seqs = say_lines(client, room, ["r1", "r2", "r3", "r4", "r5"])
    first = seqs[0]
    client.send({"type": "history", "room": room, "after": first, "before": first + 3})
    assert [m["seq"] for m in client.reply_of("history")["messages"]] == [first + 1, first + 2]
    # limit keeps the newest lines of the range, still in ascending order
    client.send({"type": "history", "room": room, "after": first - 1, "limit": 2})
    assert [m["text"] for m in client.reply_of("history")["messages"]] == ["r4", "r5"]


def test_history_pages_forward_with_forward_true(chat: JoinFactory) -> None:
    room = unique_room("pages")
    client = chat("pager", [room])
    seqs = say_lines(client, room, [f"p{n}" for n in range(7)])
    # §4: forward returns the OLDEST lines of the range; page on from the last seq.
    after, got = seqs[0] - 1, []
    while True:
        client.send({"type": "history", "room": room, "after": after, "limit": 3, "forward": True})
        page = [m["seq"] for m in client.reply_of("history")["messages"]]
        if not page:
            break
        assert len(page) <= 3
        got += page
        after = page[-1]
    assert got == seqs


def test_epochs_name_one_numbering_everywhere(chat: JoinFactory) -> None:
    # §5.4: joined, history and pong carry the room's epoch; the welcome the store's.
    room = unique_room("epoch")
    client = chat("epochs", [room])
    welcome = client.welcome
    assert welcome is not None
    joined = client.join_room(unique_room("other"))
    client.send({"type": "history", "room": room})
    history = client.reply_of("history")
    client.send({"type": "ping"})
    pong = client.reply_of("pong")
    epoch = history.get("epoch", "")
    assert isinstance(epoch, str) and epoch
    assert joined.get("epoch") and isinstance(welcome.get("epoch", ""), str)
    assert pong["epochs"][room] == epoch
    assert set(pong["epochs"]) == set(pong["seqs"])


def test_history_needs_membership(chat: JoinFactory) -> None:
    client = chat("outsider")
    client.send({"type": "history", "room": unique_room("closed")})
    error = client.error()
    assert (error["code"], error["req"]) == ("not_in_room", "history")


def test_keyed_line_is_acked_and_a_resend_is_not_published_twice(chat: JoinFactory) -> None:
    room = unique_room("keys")
    sender, listener = chat("sender", [room]), chat("listener", [room])
    key = "conf-" + secrets.token_hex(8)
    line = {"type": "say", "room": room, "text": "exactly once", "key": key}
    sender.send(line)
    ack = sender.reply_of("ack")
    _, message = listener.broadcast(lambda m: m.get("text") == "exactly once")
    assert ack == {
        "type": "ack",
        "key": key,
        "id": message["id"],
        "room": room,
        "seq": message["seq"],
    }
    sender.send(line)  # a resend after, say, a lost connection
    assert sender.reply_of("ack") == ack
    listener.watch(QUIET)
    assert not [m for _, m in listener.broadcasts if m.get("text") == "exactly once"]


def test_keyed_private_line_is_acked_without_room(chat: JoinFactory) -> None:
    sender, recipient = chat("psender"), chat("precipient")
    key = "conf-" + secrets.token_hex(8)
    to = recipient.welcome["nick"]  # type: ignore[index]
    sender.send({"type": "msg", "to": to, "text": "keyed", "key": key})
    ack = sender.reply_of("ack")
    line = recipient.reply(lambda m: m.get("type") == "private")
    assert ack["key"] == key and ack["id"] == line["id"]
    assert ack.get("room") is None and ack.get("seq", 0) == 0
