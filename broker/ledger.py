"""Sequencing and history: one part of the broker's core (broker/core.py).

:class:`Ledger` is what the core asks of it: record a line (with the client's
idempotency key), fetch a range of history, and make line ids. Two
implementations:

* :class:`LocalLedger` (here): the broker numbers a room's lines itself, in
  the loop, appends them to its history store (SQLite or memory; the loop
  flushes it before anything goes out) and acknowledges them at once.
* :class:`~broker.cluster_parts.EngineLedger`: the line is only proposed
  (:class:`~broker.cluster_parts.Append`); the cluster shell has the engine
  number and store it, and acknowledges it then (docs/CLUSTER.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from broker.actions import Action, Publish, Send
from broker.history import HistoryStore
from broker.idempotency import KEY_MEMORY, KeyMemory
from broker.rooms import Room
from broker.sessions import Session
from protocol import Ack, ChatMessage, HistoryReply, Say

__all__ = ["Ledger", "LocalLedger"]


class Ledger(Protocol):
    """Sequencing and history, as the core uses them."""

    @property
    def say_keys(self) -> Mapping[str, Ack]:
        """Acks of recorded lines by idempotency key, that the core answers a
        resend with itself (read inline on the hot path); may stay empty
        where the store de-duplicates."""
        ...

    @property
    def epoch(self) -> str:
        """The store's identity (``welcome.epoch``; docs/PROTOCOL.md)."""
        ...

    def record(self, session: Session, name: str, request: Say, now: float) -> list[Action]:
        """Record ``request`` (its text and key already checked) from
        ``session``, a member of room ``name``: what to publish and answer."""
        ...

    def fetch(
        self, name: str, after: int, before: int | None, limit: int, forward: bool
    ) -> HistoryReply:
        """The ``history`` reply for ``name`` (``after < seq < before``, the
        newest ``limit`` lines, or the oldest with ``forward``)."""
        ...

    def next_id(self) -> str:
        """A new id, unique in the chat, for a private line or a notice."""
        ...


class LineIds:
    """Ids of lines and notices: the broker's id and a counter (hex)."""

    def __init__(self, broker_id: str) -> None:
        self.broker_id = broker_id
        self._ids = 0

    def next_id(self) -> str:
        self._ids += 1
        return f"{self.broker_id}-{self._ids:x}"


class LocalLedger(LineIds):
    """Lines numbered here, stored in this broker's history store."""

    def __init__(
        self, history: HistoryStore, rooms: dict[str, Room], keys: KeyMemory, broker_id: str
    ) -> None:
        super().__init__(broker_id)
        self.history = history
        self._rooms = rooms
        #: The key memory's table (shared with private lines), read and
        #: extended inline: once per keyed line.
        self._keys = keys.acks

    @property
    def say_keys(self) -> Mapping[str, Ack]:
        return self._keys

    @property
    def epoch(self) -> str:
        return self.history.epoch

    def record(self, session: Session, name: str, request: Say, now: float) -> list[Action]:
        # The hot path: helpers are inlined (docs/PERFORMANCE.md).
        room = self._rooms[name]
        room.seq = seq = room.seq + 1
        self._ids = ids = self._ids + 1
        line = ChatMessage(
            room=name,
            nick=session.nick,
            text=request.text,
            ts=now,
            id=f"{self.broker_id}-{ids:x}",
            seq=seq,
            action=request.action,
        )
        key = request.key
        self.history.append(line, key)
        if key is None:
            return [Publish(line)]
        keys = self._keys  # KeyMemory.remember, inlined
        keys[key] = ack = Ack(key=key, id=line.id, room=name, seq=seq)
        if len(keys) > KEY_MEMORY:
            keys.popitem(last=False)
        return [Publish(line), Send(session.identity, ack)]

    def fetch(
        self, name: str, after: int, before: int | None, limit: int, forward: bool
    ) -> HistoryReply:
        lines, missed = self.history.fetch(name, after, before, limit, forward)
        return HistoryReply(
            room=name,
            messages=lines,
            missed=missed,
            seq=self._rooms[name].seq,
            epoch=self.history.room_epoch(name),
        )
