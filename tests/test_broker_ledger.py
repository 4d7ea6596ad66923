"""Sequencing and history in one broker (broker/ledger.py): pure, time as a parameter."""

from __future__ import annotations

from broker.actions import Publish, Send
from broker.directory import LocalDirectory
from broker.history import MemoryHistory
from broker.idempotency import KeyMemory
from broker.ledger import LineIds, LocalLedger
from broker.rooms import LocalRooms
from broker.sessions import Session
from broker.topics import MemoryTopics
from protocol import Ack, ChatMessage, Hello, Say


def _ledger() -> tuple[LocalLedger, LocalRooms, KeyMemory, MemoryHistory, Session]:
    history = MemoryHistory()
    rooms = LocalRooms(history, MemoryTopics())
    keys = KeyMemory()
    ledger = LocalLedger(history, rooms.by_name, keys, "b1")
    alice = Session(identity=b"A", nick="alice", token="t", last_seen=0.0)
    rooms.enter(alice, "lobby", 0.0)
    return ledger, rooms, keys, history, alice


def test_lines_are_numbered_per_room_stored_published_and_keyed_ones_acked() -> None:
    ledger, rooms, keys, history, alice = _ledger()
    [plain] = ledger.record(alice, "lobby", Say(room="lobby", text="one"), 1.0)
    assert isinstance(plain, Publish) and isinstance(plain.message, ChatMessage)
    assert (plain.message.seq, plain.message.ts, plain.message.id) == (1, 1.0, "b1-1")
    published, ack = ledger.record(alice, "lobby", Say(room="lobby", text="two", key="k"), 2.0)
    assert isinstance(published, Publish)
    assert ack == Send(b"A", Ack(key="k", id="b1-2", room="lobby", seq=2))
    assert rooms.by_name["lobby"].seq == 2
    # the key memory (shared with private lines) knows the ack for a resend
    assert ledger.say_keys["k"] == ack.message == keys.get("k")
    lines, missed = history.fetch("lobby", 0, None, 10)
    assert [(m.seq, m.text) for m in lines] == [(1, "one"), (2, "two")] and missed == 0


def test_history_replies_carry_the_rooms_numbering_and_the_stores_epoch() -> None:
    ledger, _, _, history, alice = _ledger()
    for n in range(5):
        ledger.record(alice, "lobby", Say(room="lobby", text=f"l{n}"), float(n))
    reply = ledger.fetch("lobby", 1, None, 2, False)
    assert [m.seq for m in reply.messages] == [4, 5]
    assert (reply.seq, reply.epoch, reply.missed) == (5, history.epoch, 0)
    assert [m.seq for m in ledger.fetch("lobby", 1, None, 2, True).messages] == [2, 3]
    assert ledger.epoch == history.epoch


def test_line_ids_are_unique_and_shared_with_recorded_lines() -> None:
    ledger, _, _, _, alice = _ledger()
    ids = {ledger.next_id()}
    [line] = ledger.record(alice, "lobby", Say(room="lobby", text="x"), 0.0)
    ids.add(line.message.id)  # type: ignore[union-attr]
    ids.add(ledger.next_id())
    assert ids == {"b1-1", "b1-2", "b1-3"}
    assert LineIds("x").next_id() == "x-1"


def test_one_broker_is_the_whole_chat_for_its_directory() -> None:
    directory = LocalDirectory()
    alice = Session(identity=b"A", nick="alice", token="t", last_seen=0.0)
    assert directory.claim("alice", "t")
    assert directory.locate("bob") is None
    assert directory.adopt(Hello(v=1, nick="alice", resume="t"), "alice", None) is None
    directory.save(alice)
    directory.release("alice", "t")
    directory.drop(alice)
