"""The shared checker itself (tests/cluster/checker.py): a room's numbering
is the pair (epoch, seq), so one pair naming two lines is a failure and two
epochs reusing a seq is not (docs/PROTOCOL.md §5.4)."""

from __future__ import annotations

from typing import cast

import pytest

from broker.engine import History, RedisEngine, RoomMeta, StoredLine
from protocol import ChatMessage
from protocol.codec import encode_body
from tests.cluster.checker import Checker, Message

pytestmark = pytest.mark.timeout(10)


def line(seq: int, line_id: str, room: str = "lobby") -> Message:
    return {"type": "message", "room": room, "seq": seq, "id": line_id, "text": line_id}


def history(epoch: str, *lines: Message) -> Message:
    return {"type": "history", "room": "lobby", "epoch": epoch, "messages": list(lines)}


def joined(epoch: str, seq: int = 0) -> Message:
    return {"type": "joined", "room": "lobby", "seq": seq, "epoch": epoch}


class Stored:
    """An engine whose room holds ``lines`` (seq -> id) under ``epoch``."""

    def __init__(self, epoch: str, lines: dict[int, str]) -> None:
        self.epoch, self.lines = epoch, lines

    def fetch(self, room: str, after: int, before: int | None, limit: int, **_: bool) -> History:
        stored = tuple(
            StoredLine(seq, encode_body(ChatMessage(room, "a", line_id, 1.0, line_id, seq)))
            for seq, line_id in sorted(self.lines.items())
        )
        return History(stored, 0, RoomMeta(max(self.lines), self.epoch))


def engine(epoch: str, lines: dict[int, str]) -> RedisEngine:
    return cast(RedisEngine, Stored(epoch, lines))


def test_one_epoch_and_seq_naming_two_lines_fails() -> None:
    checker = Checker()
    checker.joined("alice", joined("e1"))
    checker.line("alice", line(1, "first"))
    with pytest.raises(AssertionError, match="given to first and other"):
        checker.line("alice", line(1, "other"))
    # the same through history, and by another client holding the same epoch
    with pytest.raises(AssertionError, match="given to first and other"):
        checker.repair("alice", history("e1", line(1, "other")))
    checker.joined("bob", joined("e1"))
    with pytest.raises(AssertionError, match="given to first and other"):
        checker.line("bob", line(1, "other"))


def test_two_epochs_may_reuse_a_seq() -> None:
    checker = Checker()
    checker.joined("alice", joined("e1"))
    checker.line("alice", line(1, "old"))
    # the numbering restarted: history tells alice the new epoch
    checker.repair("alice", history("e2", line(1, "new")))
    checker.line("alice", line(2, "newer"))
    checker.joined("bob", joined("e2", seq=1))
    checker.line("bob", line(2, "newer"))
    checker.line("carol", line(1, "old"), epoch="e1")  # an epoch given explicitly
    checker.pong("carol", {"type": "pong", "epochs": {"lobby": "e2"}})
    checker.line("carol", line(2, "newer"))
    assert checker.epochs["alice"]["lobby"] == checker.epochs["carol"]["lobby"] == "e2"
    checker.verify(engine("e2", {1: "new", 2: "newer"}), ["lobby"], repaired=False)
    with pytest.raises(AssertionError, match="given to newer and other"):
        checker.line("carol", line(2, "other"))


def test_verify_holds_the_engine_to_its_epoch() -> None:
    # what a client saw under the engine's epoch must be what the engine holds
    checker = Checker()
    checker.joined("alice", joined("e1"))
    checker.line("alice", line(1, "seen"))
    with pytest.raises(AssertionError, match="given to seen and stored"):
        checker.verify(engine("e1", {1: "stored"}), ["lobby"])
    # lines seen before any epoch was known are held to the current one
    unknown = Checker()
    unknown.line("bob", line(1, "seen"))
    with pytest.raises(AssertionError, match="given to seen and stored"):
        unknown.verify(engine("e1", {1: "stored"}), ["lobby"])
    # under an older epoch, the same seq may name another line
    older = Checker()
    older.line("carol", line(1, "seen"), epoch="e0")
    older.verify(engine("e1", {1: "stored"}), ["lobby"])


def test_a_resend_must_get_the_original_ack() -> None:
    checker = Checker()
    checker.ack({"key": "k", "id": "a-1", "room": "lobby", "seq": 1})
    checker.ack({"key": "k", "id": "a-1", "room": "lobby", "seq": 1})
    checker.ack({"key": "k", "room": "lobby", "seq": 1})  # (no id: as test_failover builds them)
    with pytest.raises(AssertionError, match="acked as a-1 and a-2"):
        checker.ack({"key": "k", "id": "a-2", "room": "lobby", "seq": 1})
    with pytest.raises(AssertionError, match="acked twice differently"):
        checker.ack({"key": "k", "id": "a-1", "room": "lobby", "seq": 2})
