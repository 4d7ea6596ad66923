"""Rooms and membership: one part of the broker's core (broker/core.py).

:class:`Rooms` is what the core asks of them: enter and leave, the ``joined``
and ``who`` replies, the room list, and each room's current numbering (seq and
epoch, which ``ping`` and ``history`` report). Two implementations:

* :class:`LocalRooms` (here): one broker's rooms in its own memory, numbered
  by its history store (SQLite or memory); join and leave notices are
  published straight away.
* :class:`~broker.cluster_parts.EngineRooms`: membership in the cluster's
  engine, shared by every broker (docs/CLUSTER.md).

Like the core, a part does no I/O of its own except through its store or
engine, and takes the time as a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from broker.actions import Action, Publish, Send
from broker.history import HistoryStore
from broker.sessions import Session
from broker.topics import TopicStore
from protocol import Joined, JoinNotice, LeaveNotice, RoomInfo, WhoReply

__all__ = ["LocalRooms", "Room", "Rooms"]


@dataclass(slots=True, eq=False)
class Room:
    """A room with members on this broker."""

    name: str
    #: The last seq this broker knows of (assigned here, or relayed).
    seq: int
    # session token -> session, in joining order
    members: dict[str, Session] = field(default_factory=dict)
    #: The members' nicknames in joining order, or None until asked for
    #: again after a part or a rename (see nicks_of).
    nicks: list[str] | None = None
    #: Its away members' messages by nickname, or None until asked for
    #: again after a member went away or came back, parted or was renamed.
    away: dict[str, str] | None = None


class Rooms(Protocol):
    """Rooms and membership, as the core uses them."""

    #: The rooms with members on this broker, by name. The core's hot path
    #: reads it directly (one lookup per line; docs/PERFORMANCE.md).
    by_name: dict[str, Room]
    #: The room topics (``joined`` tells them).
    topics: TopicStore

    def enter(self, session: Session, name: str, now: float) -> list[Action]:
        """``session`` joins ``name`` (its sync arrived): tell it (``joined``)
        and the room. A session already in the room is only told again."""
        ...

    def leave(self, session: Session, name: str, reason: str, now: float) -> list[Action]:
        """``session`` leaves ``name`` (``part``, ``exit``, ``timeout``)."""
        ...

    def joined(self, name: str) -> Joined:
        """The ``joined`` reply for a room the asker is a member of."""
        ...

    def who(self, name: str) -> WhoReply:
        """The members of any room (none: an empty list)."""
        ...

    def listing(self) -> list[RoomInfo]:
        """Every room with members, by name."""
        ...

    def epoch(self, name: str) -> str:
        """The epoch of the room's numbering ("" where unknown)."""
        ...

    def renamed(self, session: Session, old: str) -> None:
        """``session`` (a member of its rooms) was called ``old`` until now."""
        ...

    def away_changed(self, session: Session) -> None:
        """``session`` went away or came back."""
        ...


class LocalRooms:
    """One broker's rooms, numbered by its history store."""

    def __init__(self, history: HistoryStore, topics: TopicStore) -> None:
        self.history = history
        self.topics = topics
        self.by_name: dict[str, Room] = {}

    def enter(self, session: Session, name: str, now: float) -> list[Action]:
        room = self.by_name.get(name)
        if name in session.rooms and room is not None:
            return [Send(session.identity, self._joined(room))]
        if room is None:
            room = self.by_name[name] = Room(name=name, seq=self.history.last_seq(name))
        room.members[session.token] = session
        if room.nicks is not None:
            room.nicks.append(session.nick)
        if session.away:
            room.away = None
        # The room's own string, not this request's equal copy: one object
        # per room name instead of one per member (docs/PERFORMANCE.md, memory).
        name = room.name
        session.rooms.add(name)
        return [
            Publish(JoinNotice(room=name, nick=session.nick, ts=now)),
            Send(session.identity, self._joined(room)),
        ]

    def leave(self, session: Session, name: str, reason: str, now: float) -> list[Action]:
        room = self.by_name[name]
        del room.members[session.token]
        room.nicks = room.away = None
        session.rooms.discard(name)
        if not room.members:
            del self.by_name[name]  # its sequence number lives on in the history store
        return [Publish(LeaveNotice(room=name, nick=session.nick, reason=reason, ts=now))]

    def joined(self, name: str) -> Joined:
        return self._joined(self.by_name[name])

    def _joined(self, room: Room) -> Joined:
        return Joined(
            room=room.name,
            seq=room.seq,
            members=nicks_of(room),
            epoch=self.history.room_epoch(room.name),
            topic=self.topics.get(room.name).text,
            away=away_of(room),
        )

    def who(self, name: str) -> WhoReply:
        room = self.by_name.get(name)
        if room is None:
            return WhoReply(room=name, members=[])
        return WhoReply(room=name, members=nicks_of(room), away=away_of(room))

    def listing(self) -> list[RoomInfo]:
        return [
            RoomInfo(room=r.name, members=len(r.members))
            for r in sorted(self.by_name.values(), key=lambda r: r.name)
        ]

    def epoch(self, name: str) -> str:
        return self.history.room_epoch(name)

    def renamed(self, session: Session, old: str) -> None:
        for name in session.rooms:
            room = self.by_name[name]
            room.nicks = room.away = None

    def away_changed(self, session: Session) -> None:
        for name in session.rooms:
            self.by_name[name].away = None


def away_of(room: Room) -> dict[str, str]:
    """The away members' messages by nickname, for ``joined`` and ``who``:
    kept per room like :func:`nicks_of`, so a join does not walk the room.
    Never changed in place (only dropped and made anew), so replies may share it."""
    away = room.away
    if away is None:
        away = room.away = {s.nick: s.away for s in room.members.values() if s.away}
    return away


def nicks_of(room: Room) -> list[str]:
    """The members' nicknames in joining order, for ``joined`` and ``who``.

    Kept per room and extended on every join, so that a join does not walk
    the whole room in Python (docs/PERFORMANCE.md, sequential joins); the
    copy (a C loop over pointers) keeps each reply as it was when decided,
    however many joins follow in the same turn.
    """
    nicks = room.nicks
    if nicks is None:
        nicks = room.nicks = [s.nick for s in room.members.values()]
    return nicks.copy()
