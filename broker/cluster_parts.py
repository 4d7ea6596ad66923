"""The core's parts on the cluster's engine (docs/CLUSTER.md): the second
implementation of :class:`~broker.rooms.Rooms`, :class:`~broker.ledger.Ledger`
and :class:`~broker.directory.Directory`.

* :class:`EngineRooms`: membership in the engine (every broker's members);
  a room's numbering is what the bus relayed last (:meth:`EngineRooms.delivered`).
  Join and leave notices go out on the engine's bus with the change.
* :class:`EngineLedger`: a line is not numbered here; it is proposed
  (:class:`Append`) and the cluster shell has the engine number, store and
  publish it, every room's lines of a loop turn in one round trip.
* :class:`EngineDirectory`: nickname leases and session records in the engine.

What still calls the engine from inside the core, and why: joining, leaving,
``who``, ``rooms``, ``history``, claiming a nickname, taking over a session
and finding where a nickname lives all need the engine's answer before the
core can reply; they are rare next to lines. Everything that only has to
happen (lines, notices, private lines to other brokers) is an action the
shell carries out after the turn.

Importing this module imports redis (through broker.engine): SQLite mode
never does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import msgspec

from broker.actions import Action, Send
from broker.engine import Engine, EngineUnavailable, Follower, Member, SessionRecord
from broker.ledger import LineIds
from broker.rooms import Room
from broker.sessions import Session
from broker.topics import MemoryTopics, TopicStore
from protocol import (
    Ack,
    Broadcast,
    ChatMessage,
    Error,
    ErrorCode,
    Hello,
    HistoryReply,
    Joined,
    JoinNotice,
    LeaveNotice,
    ProtocolError,
    RoomInfo,
    Say,
    WhoReply,
    decode_broadcast,
    nick_key,
    room_topic,
)
from protocol.codec import encode_body

__all__ = [
    "UNAVAILABLE_MESSAGE",
    "Append",
    "EngineDirectory",
    "EngineLedger",
    "EngineRooms",
    "PublishHere",
    "unavailable_message",
]

log = logging.getLogger("broker")

UNAVAILABLE_MESSAGE: Final = (
    "the broker cannot reach its cluster engine now; nothing was stored, send it again later"
)
#: The requests whose refusal means "your line was not stored".
_LINE_REQUESTS: Final = frozenset({"say", "msg"})


def unavailable_message(request_type: str | None) -> str:
    """The text of an ``unavailable`` error for a request of this type: only
    a line can have been "not stored"; anything else is simply not done."""
    if request_type in _LINE_REQUESTS:
        return UNAVAILABLE_MESSAGE
    what = f"cannot do {request_type!r}" if request_type else "cannot answer"
    return f"the broker {what} now: it cannot reach its cluster engine; try again later"


@dataclass(slots=True)
class Append:
    """A proposed line: the shell appends it to the engine, then acknowledges
    it to ``identity`` (when the client gave a ``key``) or refuses it."""

    identity: bytes
    line: ChatMessage  # seq 0: the engine numbers it
    key: str | None  # the client's idempotency key
    engine_key: str  # the key the engine de-duplicates on (the client's or ours)


@dataclass(slots=True)
class PublishHere:
    """Publish ``message`` to this broker's subscribers only, not on the bus:
    a join notice the bus cannot bring back, because this broker's
    subscription to the room was not live yet when it was published."""

    message: Broadcast


def member_of(engine: Engine, session: Session) -> Member:
    """``session`` as the engine lists it among a room's members."""
    return Member(nick_key(session.nick), session.nick, engine.broker_id, session.token)


class EngineDirectory:
    """Nickname leases and session records in the engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def claim(self, nick: str, token: str) -> bool:
        return self.engine.claim_nick(nick_key(nick), token)

    def release(self, nick: str, token: str) -> None:
        self.engine.release_nick(nick_key(nick), token)

    def adopt(self, hello: Hello, nick: str, peer: str | None) -> str | None:
        # A client resuming a session another broker held (that broker died,
        # or the client moved): take it over with its nickname lease and
        # memberships, no notices: for the others it never left.
        if not hello.resume:
            return None
        record = self.engine.take_session(hello.resume)
        if record is None:
            return None
        if record.nick_key == nick_key(nick) and record.key == (peer or ""):
            log.info("%s resumed its session (%d rooms)", nick, len(record.rooms))
            return record.token
        self.engine.drop_session(record.token)  # not this client's: start afresh
        self.engine.release_nick(record.nick_key, record.token)
        return None

    def locate(self, nick: str) -> tuple[str, str] | None:
        return self.engine.nick_holder(nick_key(nick))

    def save(self, session: Session) -> None:
        record = SessionRecord(
            token=session.token,
            broker=self.engine.broker_id,
            nick=session.nick,
            nick_key=nick_key(session.nick),
            rooms=tuple(sorted(session.rooms)),
            key=session.peer or "",
        )
        self.engine.save_session(record)

    def drop(self, session: Session) -> None:
        # Failing that, the lease and record lapse on their own: nobody
        # renews them any more.
        with contextlib.suppress(EngineUnavailable):
            self.engine.release_nick(nick_key(session.nick), session.token)
            self.engine.drop_session(session.token)


class EngineRooms:
    """Membership in the engine; this broker's members and the rooms it follows."""

    def __init__(self, engine: Engine, follower: Follower, directory: EngineDirectory) -> None:
        self.engine = engine
        self.follower = follower
        self.directory = directory
        self.topics: TopicStore = MemoryTopics()
        self.by_name: dict[str, Room] = {}
        #: Each followed room's epoch, as the relay last saw it.
        self._epochs: dict[str, str] = {}
        #: Leaves the engine did not take (it was down): retried by retry_leaves.
        self._unleft: list[tuple[str, Member, bytes]] = []
        #: Join notices published here too (PublishHere), per room: their
        #: copy from the bus, if the subscription was live after all, is dropped.
        self._echoes: dict[str, set[bytes]] = {}
        #: Away messages seen on the bus: nick key -> text (docs/PROTOCOL.md "Away").
        self.away_seen: dict[str, str] = {}

    def enter(self, session: Session, name: str, now: float) -> list[Action]:
        try:
            if name in session.rooms:
                return [Send(session.identity, self.joined(name))]
            join = JoinNotice(room=name, nick=session.nick, ts=now)
            notice = encode_body(join)
            # False: a member already (a session taken over from another broker):
            # nothing is announced, for the others it never left
            added = self.engine.join(name, member_of(self.engine, session), notice)
            room = self.by_name.get(name)
            if room is None:
                meta = self.engine.meta([name])[name]
                room = self.by_name[name] = Room(name=name, seq=meta.seq)
                self._epochs[name] = meta.epoch
                # relay from the seq `joined` tells the client: nothing between
                # it and the bus going live is skipped
                self.follower.follow(name, meta)
            room.members[session.token] = session
            session.rooms.add(name)
            self.directory.save(session)
            actions: list[Action] = []
            if added and not self.follower.live(name):
                # The bus will not bring the notice back here: the joiner (and
                # any member who joined as early) would not see it, as in SQLite mode.
                self._echoes.setdefault(name, set()).add(notice)
                actions.append(PublishHere(join))  # type: ignore[arg-type]
            actions.append(Send(session.identity, self.joined(name)))
            return actions
        except EngineUnavailable as exc:
            log.warning("join of %s to %s failed: %s", session.nick, name, exc)
            error = Error(
                code=ErrorCode.UNAVAILABLE,
                message=unavailable_message("join"),
                req="join",
                room=name,
            )
            return [Send(session.identity, error)]

    def leave(self, session: Session, name: str, reason: str, now: float) -> list[Action]:
        member = member_of(self.engine, session)
        notice = encode_body(LeaveNotice(room=name, nick=session.nick, reason=reason, ts=now))
        try:
            self.engine.leave(name, member, notice)
        except EngineUnavailable:
            self._unleft.append((name, member, notice))
        self.drop(session, name)
        if reason == "part":  # (otherwise the whole session goes)
            with contextlib.suppress(EngineUnavailable):
                self.directory.save(session)
        return []  # the notice goes out on the bus

    def drop(self, session: Session, name: str) -> None:
        """Forget ``session``'s membership of ``name`` here only."""
        room = self.by_name[name]
        del room.members[session.token]
        session.rooms.discard(name)
        if not room.members:
            del self.by_name[name]
            self._epochs.pop(name, None)
            self._echoes.pop(name, None)
            self.follower.unfollow(name)

    def echoed(self, room: str, payload: bytes) -> bool:
        """Whether a bus notice is one already published here (PublishHere)."""
        echoes = self._echoes.get(room)
        if echoes is None or payload not in echoes:
            return False
        echoes.discard(payload)
        return True

    def retry_leaves(self) -> None:
        """Tell the engine the leaves it missed while it was down."""
        unleft, self._unleft = self._unleft, []
        for index, (room, member, notice) in enumerate(unleft):
            try:
                self.engine.leave(room, member, notice)
            except EngineUnavailable:
                self._unleft += unleft[index:]
                break

    def forget_leaves(self) -> None:
        """Drop the leaves to retry (after a new registration: they are void)."""
        self._unleft.clear()

    def joined(self, name: str) -> Joined:
        room = self.by_name[name]
        members = [m.nick for m in self.engine.members(name)]
        return Joined(
            room=name,
            seq=room.seq,
            members=members,
            epoch=self._epochs.get(name, ""),
            topic=self.topics.get(name).text,
            away=self._away_of(members),
        )

    def who(self, name: str) -> WhoReply:
        members = [m.nick for m in self.engine.members(name)]
        return WhoReply(room=name, members=members, away=self._away_of(members))

    def _away_of(self, nicks: list[str]) -> dict[str, str]:
        away = self.away_seen
        return {n: away[nick_key(n)] for n in nicks if nick_key(n) in away}

    def listing(self) -> list[RoomInfo]:
        return [RoomInfo(room=r, members=n) for r, n in sorted(self.engine.rooms().items())]

    def epoch(self, name: str) -> str:
        return self._epochs.get(name, "")

    def delivered(self, name: str, epoch: str, seq: int) -> None:
        """The shell relayed ``name``'s lines up to ``seq`` in ``epoch``."""
        room = self.by_name.get(name)
        if room is not None:
            room.seq = seq
            self._epochs[name] = epoch

    def renamed(self, session: Session, old: str) -> None:
        was = Member(nick_key(old), old, self.engine.broker_id, session.token)
        member = member_of(self.engine, session)
        for name in sorted(session.rooms):
            self.engine.leave(name, was)
            self.engine.join(name, member)

    def away_changed(self, session: Session) -> None:
        return None  # away messages come back on the bus (ClusterCore.noticed)


class EngineLedger(LineIds):
    """Lines proposed to the engine, history read from it."""

    def __init__(self, engine: Engine, epoch: str) -> None:
        super().__init__(engine.broker_id)
        self.engine = engine
        self._epoch = epoch
        self._keys: dict[str, Ack] = {}  # the engine de-duplicates lines

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def say_keys(self) -> Mapping[str, Ack]:
        return self._keys

    def record(self, session: Session, name: str, request: Say, now: float) -> list[Action]:
        line = ChatMessage(
            room=name,
            nick=session.nick,
            text=request.text,
            ts=now,
            id=self.next_id(),
            seq=0,
            action=request.action,
        )
        key = request.key
        # Our own key where the client gave none: a resend after an
        # indeterminate failure is then de-duplicated too (docs/CLUSTER.md).
        engine_key = key if key is not None else "!" + line.id
        return [Append(session.identity, line, key, engine_key)]  # type: ignore[list-item]

    def fetch(
        self, name: str, after: int, before: int | None, limit: int, forward: bool
    ) -> HistoryReply:
        found = self.engine.fetch(name, after, before, limit, forward=forward)
        lines = [line_of(name, stored.seq, stored.payload) for stored in found.lines]
        return HistoryReply(
            room=name,
            messages=[line for line in lines if line is not None],
            missed=found.missed,
            seq=found.meta.seq,
            epoch=found.meta.epoch,
        )


def line_of(room: str, seq: int, payload: bytes) -> ChatMessage | None:
    """A stored payload as the line it is, numbered ``seq``; None if it is not
    one (a payload another version of the broker wrote)."""
    try:
        message = decode_broadcast([room_topic(room), payload])
    except ProtocolError:
        log.warning("room %s: seq %d holds something that is not a line", room, seq)
        return None
    if type(message) is not ChatMessage:
        return None
    return msgspec.structs.replace(message, seq=seq)
