"""The one checker every multi-broker test shares (docs/CLUSTER.md, tests).

It records what clients were told (acks, delivered lines, nicknames held)
and what the engine holds, and asserts the cluster's guarantees:

* no seq reused within an epoch: per room, (epoch, seq) -> line id is a
  function (two epochs may reuse a seq: a new numbering, §5.4);
* every acknowledged line exactly once in its room's history;
* each client's delivered seqs contiguous from its join point, once its gaps
  are repaired from history;
* never two live holders of one nickname (case-insensitive).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from broker.cluster import line_of
from broker.engine import RedisEngine

Message = dict[str, Any]


@dataclass
class Checker:
    """Collects observations; :meth:`verify` asserts every guarantee at once."""

    #: key -> (room, seq) of every ack any client got
    acks: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: key -> line id of every ack that named one
    ack_ids: dict[str, str] = field(default_factory=dict)
    #: (room, epoch, seq) -> line id, from every delivery and history read;
    #: epoch "" where the client knew none yet (checked at verify against
    #: the engine's current epoch, the only one whose lines it still has)
    seen: dict[tuple[str, str, int], str] = field(default_factory=dict)
    #: client name -> room -> the room's epoch as the client holds it (from
    #: joined, history and pong replies: docs/PROTOCOL.md §5.4)
    epochs: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    #: client name -> room -> seqs delivered live, in arrival order
    delivered: dict[str, dict[str, list[int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    #: client name -> room -> seqs it fetched from history to fill gaps
    repaired: dict[str, dict[str, set[int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set))
    )
    #: client name -> room -> seq of its joined reply
    joined_at: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))

    def ack(self, message: Message) -> None:
        """An ack a client got: a resend's is the original ack (§5.5)."""
        key = message["key"]
        where = (message["room"], message["seq"])
        assert self.acks.setdefault(key, where) == where, f"key {key} acked twice differently"
        if "id" in message:
            line_id = self.ack_ids.setdefault(key, message["id"])
            assert line_id == message["id"], f"key {key} acked as {line_id} and {message['id']}"

    def line(self, client: str, message: Message, epoch: str = "") -> None:
        """A line a client received live (a broadcast of type message), in
        ``epoch``; by default the room's epoch the client holds now."""
        room = message["room"]
        self._number(message, epoch or self.epochs[client].get(room, ""))
        self.delivered[client][room].append(message["seq"])

    def repair(self, client: str, reply: Message) -> None:
        """A history reply a client asked for to fill a gap (its ``epoch``
        numbers its lines, and the client holds it from now on)."""
        epoch = self.epoch(client, reply["room"], reply.get("epoch", ""))
        for line in reply["messages"]:
            self._number(line, epoch)
            self.repaired[client][reply["room"]].add(line["seq"])

    def joined(self, client: str, message: Message) -> None:
        """A joined reply: where the client's numbering starts, and its epoch."""
        self.joined_at[client][message["room"]] = message["seq"]
        self.epoch(client, message["room"], message.get("epoch", ""))

    def pong(self, client: str, message: Message) -> None:
        """A pong reply: the epochs of the client's rooms."""
        for room, epoch in message.get("epochs", {}).items():
            self.epoch(client, room, epoch)

    def epoch(self, client: str, room: str, epoch: str) -> str:
        """The client was told ``room``'s epoch ("": nothing new, as from an
        old broker); returns the epoch it holds now."""
        held = self.epochs[client]
        if epoch:
            held[room] = epoch
        return held.get(room, "")

    def _number(self, message: Message, epoch: str) -> None:
        where = (message["room"], epoch, message["seq"])
        known = self.seen.setdefault(where, message["id"])
        assert known == message["id"], f"seq {where} given to {known} and {message['id']}"

    def nicks(self, holders: list[tuple[str, str]]) -> None:
        """(client, nick) of every session that believes it holds its nick now."""
        owners: dict[str, str] = {}
        for client, nick in holders:
            other = owners.setdefault(nick.casefold(), client)
            assert other == client, f"{nick!r} held by {other} and {client} at once"

    def verify(self, engine: RedisEngine, rooms: list[str], repaired: bool = True) -> None:
        """Assert every guarantee against what the engine holds for ``rooms``."""
        stored: dict[str, dict[int, str]] = {}
        for room in rooms:
            history = engine.fetch(room, 0, None, 100_000, forward=True)
            ids: dict[int, str] = {}
            for entry in history.lines:
                line = line_of(room, entry.seq, entry.payload)
                assert line is not None
                ids[entry.seq] = line.id
                number = {"room": room, "seq": entry.seq, "id": line.id}
                self._number(number, history.meta.epoch)
                if (room, "", entry.seq) in self.seen:  # seen where the epoch was unknown
                    self._number(number, "")
            stored[room] = ids
            assert sorted(ids) == list(range(1, history.meta.seq + 1)), f"{room}: seqs not 1..n"
        for key, (room, seq) in self.acks.items():
            assert seq in stored[room], f"acked {key} ({room} #{seq}) is not stored"
        # every acknowledged key once: keys map to distinct seqs
        places = list(self.acks.values())
        assert len(places) == len(set(places)), "two keys acknowledged with one seq"
        for client, per_room in self.delivered.items():
            for room, seqs in per_room.items():
                assert seqs == sorted(set(seqs)), f"{client}/{room}: out of order or twice"
                if repaired and seqs:
                    start = self.joined_at[client].get(room, seqs[0] - 1) + 1
                    have = sorted(set(seqs) | self.repaired[client][room])
                    have = [seq for seq in have if seq >= start]
                    assert have == list(range(start, have[-1] + 1)), (
                        f"{client}/{room}: gap in {have[:5]}...{have[-5:]}"
                    )
