"""Cluster mode: the broker's core and loop on a shared engine (docs/CLUSTER.md).

Two parts, as in SQLite mode:

* :class:`ClusterCore` decides, as :class:`~broker.core.BrokerCore` does and
  mostly by it, with sequencing, history, nicknames and membership moved to
  the engine. A line is not numbered here: ``say`` proposes it
  (:class:`Append`) and the shell hands back the engine's result (a seq, a
  duplicate's seq, or ``unavailable``). Notices go out on the engine's bus,
  never straight to XPUB, so every broker relays one order per room.
* :class:`ClusterShell` runs what the core proposed against the engine
  (every room's lines of one loop turn in one pipelined round trip), turns
  what the bus brings into broadcasts, and keeps the timers: heartbeat,
  stale-bus check, nickname leases, the reaper.

The engine's control calls (claim a nickname, join, leave, who) are made by
the core directly: they are rare next to lines, and each needs its answer
before the core can reply. Both parts run on the broker's one thread.

Importing this module imports redis: SQLite mode never does (broker/cli.py
imports it only for ``--engine``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, cast

import msgspec
import zmq

from broker.core import (
    Action,
    BrokerConfig,
    BrokerCore,
    Publish,
    Send,
    _Room,
    _Session,
)
from broker.engine import (
    BusReader,
    Engine,
    EngineError,
    EngineUnavailable,
    Fenced,
    Follower,
    InboxLine,
    Member,
    NewLine,
    ReapReport,
    RedisEngine,
    SessionRecord,
)
from broker.engine.breaker import Breaker
from broker.engine.bus import Bell, BusDown, BusNotice, BusUp
from broker.engine.redis_topics import RedisTopics
from broker.engine.relay import Deliver, Reset
from broker.history import MemoryHistory
from broker.topics import EngineTopics
from protocol import (
    Ack,
    AwayNotice,
    Broadcast,
    ChatMessage,
    Error,
    ErrorCode,
    Hello,
    History,
    HistoryReply,
    Joined,
    JoinNotice,
    LeaveNotice,
    Ping,
    Pong,
    PrivateMessage,
    ProtocolError,
    Rename,
    RoomInfo,
    RoomList,
    Say,
    SendPrivate,
    Who,
    WhoReply,
    decode_broadcast,
    decode_reply,
    nick_key,
    room_topic,
    validate_key,
    validate_nick,
    validate_room,
    validate_text,
)
from protocol.codec import describe_request, encode_body
from protocol.validation import MAX_TEXT_BYTES

__all__ = ["Append", "ClusterCore", "ClusterShell", "PublishHere"]

log = logging.getLogger("broker")

#: Seconds between heartbeats, stale-bus checks, reaper rounds and inbox reads.
CLUSTER_TICK: Final = 1.0
#: Seconds the engine is not asked again after it was unavailable
#: (broker/engine/breaker.py): a stalled Redis costs one timeout, not one per call.
BREAKER_COOLDOWN: Final = 1.0
#: Most lines one history request returns (as in SQLite mode).
MAX_HISTORY_LIMIT: Final = 1000

UNAVAILABLE_MESSAGE: Final = (
    "the broker cannot reach its cluster engine now; nothing was stored, send it again later"
)


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


class ClusterCore(BrokerCore):
    """:class:`BrokerCore` with numbering, history, nicknames and membership
    in the engine shared by every broker of the cluster."""

    def __init__(self, config: BrokerConfig, engine: Engine, follower: Follower) -> None:
        super().__init__(config, MemoryHistory(per_room=1), broker_id=engine.broker_id)
        self.engine = engine
        self.follower = follower
        #: Each followed room's epoch, as the relay last saw it.
        self._epochs: dict[str, str] = {}
        #: Leaves the engine did not take (it was down): retried by tick.
        self._unleft: list[tuple[str, Member, bytes]] = []
        #: Join notices published here too (PublishHere), per room: their
        #: copy from the bus, if the subscription was live after all, is dropped.
        self._echoes: dict[str, set[bytes]] = {}
        #: Away messages seen on the bus: nick key -> text (docs/PROTOCOL.md "Away").
        self._away_seen: dict[str, str] = {}
        #: Set when the engine refused a write because our lease expired.
        self.fenced = False

    # --- what the loop calls ---------------------------------------------

    def handle(
        self, identity: bytes, frames: list[bytes], now: float, peer: str | None = None
    ) -> list[Action]:
        """As :meth:`BrokerCore.handle`; an engine that cannot answer makes the
        request fail with the retryable ``unavailable``."""
        try:
            return super().handle(identity, frames, now, peer)
        except (EngineUnavailable, Fenced) as exc:
            return [self._unavailable(identity, frames, exc)]

    def subscribed(self, notice: bytes, now: float) -> list[Action]:
        try:
            return super().subscribed(notice, now)
        except Fenced:
            self.fenced = True
            return []

    def tick(self, now: float) -> list[Action]:
        """Expire sessions (as in SQLite mode) and retry leaves the engine missed."""
        try:
            actions = super().tick(now)
            unleft, self._unleft = self._unleft, []
            for index, (room, member, notice) in enumerate(unleft):
                try:
                    self.engine.leave(room, member, notice)
                except EngineUnavailable:
                    self._unleft += unleft[index:]
                    break
            return actions
        except Fenced:
            self.fenced = True
            return []

    def delivered(self, room: str, epoch: str, seq: int) -> None:
        """The shell relayed a room's lines up to ``seq`` (pong and joined use it)."""
        known = self._rooms.get(room)
        if known is not None:
            known.seq = seq
            self._epochs[room] = epoch

    def inbox(self, lines: list[InboxLine]) -> list[Action]:
        """Private lines other brokers sent to sessions of ours."""
        actions: list[Action] = []
        for entry in lines:
            token, _, body = entry.payload.partition(b"\n")
            session = self.sessions.with_token(token.decode("ascii", "replace"))
            if session is None:
                continue  # gone meanwhile: its sender was acknowledged, as in §5
            try:
                message = decode_reply([body])
            except ProtocolError:
                log.warning("inbox: an entry that is not a reply: %r", body[:80])
                continue
            actions.append(Send(session.identity, message))
        return actions

    def leases(self) -> dict[str, str]:
        """This broker's nickname leases: nick key -> session token."""
        return {nick_key(s.nick): s.token for s in self.sessions}

    def rejoin(self, now: float, reaped: ReapReport | None) -> list[Action]:
        """After Fenced, under a new broker id: take every session's nickname
        and rooms again through the normal, fenced path (claim, join). A
        session whose nickname somebody else took meanwhile (its client went
        elsewhere while we were cut off or paused) is dropped: its client gets
        ``not_joined`` and says hello again.

        ``reaped`` is what we reaped of our old id ourselves (None: another
        broker did, and announced the leaves): those members come back
        silently, as if never gone; the others are announced as joining."""
        self.fenced = False
        self._unleft.clear()
        ours = set()
        if reaped is not None:
            ours = {(r.room, r.member.session) for r in reaped.members}
        for session in self.sessions:
            if not self.engine.claim_nick(nick_key(session.nick), session.token):
                log.info("%s lost its nickname while this broker was fenced", session.nick)
                for name in list(session.rooms):
                    if (name, session.token) in ours:
                        notice = LeaveNotice(room=name, nick=session.nick, reason="timeout", ts=now)
                        self.engine.publish(name, encode_body(notice))
                    self._drop_member(session, name)
                self.sessions.remove(session)
                continue
            for name in session.rooms:
                join: bytes | None = None
                if (name, session.token) not in ours:
                    join = encode_body(JoinNotice(room=name, nick=session.nick, ts=now))
                self.engine.join(name, self._member(session), join)
            self._save(session)
        return []

    # --- sessions and nicknames -------------------------------------------

    def _hello(
        self,
        identity: bytes,
        session: _Session | None,
        hello: object,
        now: float,
        peer: str | None = None,
    ) -> list[Action]:
        actions = super()._hello(identity, session, hello, now, peer)  # type: ignore[arg-type]
        made = self.sessions.by_identity.get(identity)
        if made is None or made.token == getattr(hello, "resume", None):
            # refused, or a resume: of a session we held, or one we took over
            # from another broker with its nickname lease (_new_token)
            if made is not None:
                self._save(made)
            return actions
        try:
            claimed = self.engine.claim_nick(nick_key(made.nick), made.token)
        except EngineError:
            self.sessions.remove(made)
            raise
        if not claimed:
            self.sessions.remove(made)
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"the nickname {made.nick!r} is taken")
        self._save(made)
        return actions

    def _new_token(self, hello: Hello, nick: str, peer: str | None) -> str:
        # A client resuming a session another broker held (that broker died,
        # or the client moved): take it over with its nickname lease and
        # memberships, no notices: for the others it never left.
        if hello.resume:
            record = self.engine.take_session(hello.resume)
            if record is not None:
                if record.nick_key == nick_key(nick) and record.key == (peer or ""):
                    log.info("%s resumed its session from broker %s", nick, record.broker)
                    return record.token
                self.engine.drop_session(record.token)  # not this client's: start afresh
                self.engine.release_nick(record.nick_key, record.token)
        return super()._new_token(hello, nick, peer)

    def _save(self, session: _Session) -> None:
        """Store the session's record, so that its client can resume on any broker."""
        record = SessionRecord(
            token=session.token,
            broker=self.engine.broker_id,
            nick=session.nick,
            nick_key=nick_key(session.nick),
            rooms=tuple(sorted(session.rooms)),
            key=session.peer or "",
        )
        self.engine.save_session(record)

    def lost_sessions(self, tokens: list[str]) -> None:
        """Sessions whose records we no longer hold: taken over by another
        broker (their clients resumed there: forget them here without a word
        to the engine or the rooms), or lost by Redis (save them again)."""
        for token in tokens:
            session = self.sessions.with_token(token)
            if session is None:
                continue
            if self.engine.nick_holder(nick_key(session.nick)) == (self.engine.broker_id, token):
                self._save(session)  # still ours: the record was lost, not taken
                continue
            log.info("%s moved to another broker", session.nick)
            for name in list(session.rooms):
                self._drop_member(session, name)
            self.sessions.remove(session)

    def _remove(self, session: _Session, reason: str, now: float) -> list[Action]:
        actions = super()._remove(session, reason, now)
        # Failing that, the lease and record lapse on their own: nobody
        # renews them any more.
        with contextlib.suppress(EngineUnavailable):
            self.engine.release_nick(nick_key(session.nick), session.token)
            self.engine.drop_session(session.token)
        return actions

    def _rename(self, session: _Session, request: Rename, now: float) -> list[Action]:
        new = validate_nick(request.nick)
        old_key, new_key = nick_key(session.nick), nick_key(new)
        if new_key != old_key and not self.engine.claim_nick(new_key, session.token):
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"the nickname {new!r} is taken")
        old = self._member(session)
        try:
            actions = super()._rename(session, request, now)
        except ProtocolError:
            if new_key != old_key:
                self.engine.release_nick(new_key, session.token)
            raise
        if new_key != old_key:
            self.engine.release_nick(old_key, session.token)
        member = self._member(session)
        for name in sorted(session.rooms):
            self.engine.leave(name, old)
            self.engine.join(name, member)
        self._save(session)
        return actions  # the nick notices go out on the bus (ClusterShell.settle)

    def _member(self, session: _Session) -> Member:
        return Member(nick_key(session.nick), session.nick, self.engine.broker_id, session.token)

    # --- rooms and membership ---------------------------------------------

    def _synced(self, session: _Session, number: int, now: float) -> list[Action]:
        rooms, _ = session.pending.pop(number)
        actions: list[Action] = []
        if not session.active:
            session.active = True
            log.info("%s joined", session.nick)
        for name in rooms:
            try:
                if name in session.rooms:
                    actions.append(Send(session.identity, self._joined(self._rooms[name])))
                else:
                    actions += self._enter(session, name, now)
            except EngineUnavailable as exc:
                log.warning("join of %s to %s failed: %s", session.nick, name, exc)
                error = Error(
                    code=ErrorCode.UNAVAILABLE,
                    message=UNAVAILABLE_MESSAGE,
                    req="join",
                    room=name,
                )
                actions.append(Send(session.identity, error))
        return actions

    def _enter(self, session: _Session, name: str, now: float) -> list[Action]:
        join = JoinNotice(room=name, nick=session.nick, ts=now)
        notice = encode_body(join)
        # False: a member already (a session taken over from another broker):
        # nothing is announced, for the others it never left
        added = self.engine.join(name, self._member(session), notice)
        room = self._rooms.get(name)
        if room is None:
            meta = self.engine.meta([name])[name]
            room = self._rooms[name] = _Room(name=name, seq=meta.seq)
            self._epochs[name] = meta.epoch
            # relay from the seq `joined` tells the client: nothing between
            # it and the bus going live is skipped
            self.follower.follow(name, meta)
        room.members[session.token] = session
        session.rooms.add(name)
        self._save(session)
        actions: list[Action] = []
        if added and not self.follower.live(name):
            # The bus will not bring the notice back here: the joiner (and any
            # member who joined as early) would not see it, as in SQLite mode.
            self._echoes.setdefault(name, set()).add(notice)
            actions.append(PublishHere(join))  # type: ignore[arg-type]
        actions.append(Send(session.identity, self._joined(room)))
        return actions

    def echoed(self, room: str, payload: bytes) -> bool:
        """Whether a bus notice is one already published here (PublishHere)."""
        echoes = self._echoes.get(room)
        if echoes is None or payload not in echoes:
            return False
        echoes.discard(payload)
        return True

    def _leave_room(self, session: _Session, name: str, reason: str, now: float) -> list[Action]:
        member = self._member(session)
        notice = encode_body(LeaveNotice(room=name, nick=session.nick, reason=reason, ts=now))
        try:
            self.engine.leave(name, member, notice)
        except EngineUnavailable:
            self._unleft.append((name, member, notice))
        self._drop_member(session, name)
        if reason == "part":  # (otherwise the whole session goes)
            with contextlib.suppress(EngineUnavailable):
                self._save(session)
        return []

    def _drop_member(self, session: _Session, name: str) -> None:
        room = self._rooms[name]
        del room.members[session.token]
        session.rooms.discard(name)
        if not room.members:
            del self._rooms[name]
            self._epochs.pop(name, None)
            self._echoes.pop(name, None)
            self.follower.unfollow(name)

    def _joined(self, room: _Room) -> Joined:
        members = [m.nick for m in self.engine.members(room.name)]
        return Joined(
            room=room.name,
            seq=room.seq,
            members=members,
            epoch=self._epochs.get(room.name, ""),
            topic=self.topics.get(room.name).text,
            away=self._away_of(members),
        )

    def _who(self, session: _Session, request: Who, now: float) -> list[Action]:
        name = validate_room(request.room)
        members = [m.nick for m in self.engine.members(name)]
        reply = WhoReply(room=name, members=members, away=self._away_of(members))
        return [Send(session.identity, reply)]

    def _away_of(self, nicks: list[str]) -> dict[str, str]:
        away = self._away_seen
        return {n: away[nick_key(n)] for n in nicks if nick_key(n) in away}

    def noticed(self, notice: Broadcast) -> None:
        """A notice from the bus: keep what replies need from it (who is
        away), whichever broker it came from. Topics are in the engine."""
        kind = type(notice)
        if kind is AwayNotice:
            if notice.text:  # type: ignore[union-attr]
                self._away_seen[nick_key(notice.nick)] = notice.text  # type: ignore[union-attr]
            else:
                self._away_seen.pop(nick_key(notice.nick), None)  # type: ignore[union-attr]
        elif kind is LeaveNotice:
            self._away_seen.pop(nick_key(notice.nick), None)  # type: ignore[union-attr]

    def _list_rooms(self, session: _Session, request: object, now: float) -> list[Action]:
        rooms = [RoomInfo(room=r, members=n) for r, n in sorted(self.engine.rooms().items())]
        return [Send(session.identity, RoomList(rooms=rooms))]

    # --- sequencing and history -------------------------------------------

    def _say(self, session: _Session, request: Say, now: float) -> list[Action]:
        name = request.room
        if name not in session.rooms:
            name = validate_room(name)
            if name not in session.rooms:
                raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {name}")
        text = request.text
        if not text.isascii() or len(text) > MAX_TEXT_BYTES or not text or text.isspace():
            validate_text(text)
        key = request.key
        if key is not None:
            validate_key(key)
        line = ChatMessage(
            room=name,
            nick=session.nick,
            text=text,
            ts=now,
            id=self._next_id(),
            seq=0,
            action=request.action,
        )
        # Our own key where the client gave none: a resend after an
        # indeterminate failure is then de-duplicated too (docs/CLUSTER.md).
        engine_key = key if key is not None else "!" + line.id
        return [Append(session.identity, line, key, engine_key)]  # type: ignore[list-item]

    def _history(self, session: _Session, request: History, now: float) -> list[Action]:
        name = validate_room(request.room)
        if name not in session.rooms:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {name}")
        limit = max(0, min(request.limit, MAX_HISTORY_LIMIT))
        found = self.engine.fetch(
            name, max(0, request.after), request.before, limit, forward=request.forward
        )
        lines = [line_of(name, stored.seq, stored.payload) for stored in found.lines]
        reply = HistoryReply(
            room=name,
            messages=[line for line in lines if line is not None],
            missed=found.missed,
            seq=found.meta.seq,
            epoch=found.meta.epoch,
        )
        return [Send(session.identity, reply)]

    def _ping(self, session: _Session, request: Ping, now: float) -> list[Action]:
        seqs = {name: self._rooms[name].seq for name in session.rooms}
        epochs = {name: self._epochs.get(name, "") for name in session.rooms}
        return [Send(session.identity, Pong(broker=self.broker_id, seqs=seqs, epochs=epochs))]

    # --- private lines ----------------------------------------------------

    def _private(self, session: _Session, request: SendPrivate, now: float) -> list[Action]:
        try:
            return super()._private(session, request, now)
        except ProtocolError as exc:
            if exc.code != ErrorCode.NO_SUCH_NICK:
                raise
        holder = self.engine.nick_holder(nick_key(request.to))
        if holder is None:
            raise ProtocolError(ErrorCode.NO_SUCH_NICK, f"nobody called {request.to!r} is here")
        broker, token = holder
        line = PrivateMessage(
            nick=session.nick,
            to=request.to,
            text=request.text,
            ts=now,
            id=self._next_id(),
            action=request.action,
            key=request.key,
        )
        self.engine.send_private(broker, token.encode() + b"\n" + encode_body(line))
        actions: list[Action] = [Send(session.identity, line)]
        if request.key is not None:
            ack = self._remember(Ack(key=request.key, id=line.id))
            actions.append(Send(session.identity, ack))
        return actions

    # --- helpers ------------------------------------------------------------

    def _unavailable(self, identity: bytes, frames: list[bytes], exc: EngineError) -> Action:
        if isinstance(exc, Fenced):
            self.fenced = True
        request_type, key, room = describe_request(frames)
        log.warning("refused %s: engine: %s", request_type or "frames", exc)
        error = Error(
            code=ErrorCode.UNAVAILABLE,
            message=UNAVAILABLE_MESSAGE,
            req=request_type,
            key=key,
            room=room,
        )
        return Send(identity, error)


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


def notice_of(room: str, payload: bytes) -> Broadcast | None:
    """A notice from the bus (join, leave, rename), or None if it is not one."""
    try:
        return decode_broadcast([room_topic(room), payload])
    except ProtocolError:
        log.warning("room %s: a bus notice that is not a broadcast: %r", room, payload[:80])
        return None


class ClusterShell:
    """The engine side of the broker's loop: settles proposals, relays the bus,
    keeps the timers. Owned and called by :class:`~broker.server.BrokerServer`."""

    def __init__(self, engine: RedisEngine, cooldown: float = BREAKER_COOLDOWN) -> None:
        # Every call, the core's too, through the breaker: the same methods
        # and attributes, so it stands in for the engine (a cast, not a class).
        self.engine = cast(RedisEngine, Breaker(engine, cooldown))
        self.reader: BusReader | None = None
        self.follower: Follower | None = None
        self.core: ClusterCore | None = None
        self._next_tick = 0.0
        self._next_refresh = 0.0
        self._inbox_after = "0-0"
        self._registered = False
        self._rejoin = False
        self._old_id = ""

    def make_core(self, config: BrokerConfig, ctx: zmq.Context[zmq.Socket[bytes]]) -> ClusterCore:
        """Register with the engine, start the bus reader and make the core."""
        engine = self.engine
        engine.register()
        self._registered = True
        self.reader = BusReader(
            ctx,
            engine.url,
            prefix=engine.settings.prefix,
            broker=engine.broker_id,
            timeout=engine.settings.timeout,
        )
        self.reader.start()
        self.follower = Follower(engine, self.reader)
        self.core = ClusterCore(config, engine, self.follower)
        topics = cast(Breaker, engine).also(RedisTopics.of(engine))  # in Redis, for all
        self.core.topics = EngineTopics(topics)
        log.info("cluster: broker %s on %s", engine.broker_id, engine.url.display)
        return self.core

    @property
    def socket(self) -> zmq.Socket[bytes]:
        """The bus reader's socket, for the loop's poller."""
        assert self.reader is not None
        return self.reader.socket

    # --- per turn -------------------------------------------------------------

    def settle(self, actions: list[Action]) -> list[Action]:
        """Run this turn's proposals against the engine: every room's lines in
        one round trip, then their acks or ``unavailable`` errors; notices
        onto the bus. Returns what the loop sends now."""
        out: list[Action] = []
        batches: dict[str, list[Append]] = {}
        notices: list[Broadcast] = []
        for action in cast(list[object], actions):
            if isinstance(action, Append):
                batches.setdefault(action.line.room, []).append(action)
            elif isinstance(action, Publish):
                notices.append(action.message)
            elif isinstance(action, PublishHere):
                out.append(Publish(action.message))
            else:
                out.append(cast(Action, action))
        for notice in notices:
            try:
                self.engine.publish(notice.room, encode_body(notice))
            except EngineUnavailable as exc:
                log.warning("a notice of %s was lost: %s", notice.room, exc)
            except Fenced:
                self._fenced()
        if batches:
            out += self._append(batches)
        if self.core is not None and self.core.fenced:
            out += self._fenced()
        return out

    def _append(self, batches: dict[str, list[Append]]) -> list[Action]:
        todo = {
            room: [NewLine(a.engine_key, encode_body(a.line)) for a in items]
            for room, items in batches.items()
        }
        results: dict[str, object] = {}
        for _attempt in range(2):
            try:
                outcome: dict[str, object] = dict(self.engine.append(todo))
            except Fenced as exc:
                assert self.core is not None
                self.core.fenced = True
                outcome = {room: EngineUnavailable(str(exc)) for room in todo}
            except EngineUnavailable as exc:
                outcome = {room: exc for room in todo}
            retry = {}
            for room, result in outcome.items():
                if isinstance(result, EngineUnavailable) and result.indeterminate:
                    retry[room] = todo[room]  # may be stored: same keys again, de-duplicated
                results[room] = result
            if not retry:
                break
            todo = retry
        out: list[Action] = []
        for room, items in batches.items():
            result = results[room]
            if isinstance(result, EngineError):
                log.warning("room %s: %d lines refused: %s", room, len(items), result)
                for a in items:
                    error = Error(
                        code=ErrorCode.UNAVAILABLE,
                        message=UNAVAILABLE_MESSAGE,
                        req="say",
                        key=a.key,
                        room=room,
                    )
                    out.append(Send(a.identity, error))
                continue
            seqs = result.seqs  # type: ignore[attr-defined]
            for a, seq in zip(items, seqs, strict=True):
                if a.key is not None:
                    out.append(Send(a.identity, Ack(key=a.key, id=a.line.id, room=room, seq=seq)))
        return out

    def pump(self) -> list[Action]:
        """Everything the bus brought: lines and notices to publish, inbox lines."""
        assert self.follower is not None
        return self._outputs(self.follower.pump())

    def _outputs(self, outputs: Sequence[object]) -> list[Action]:
        core = self.core
        assert core is not None
        actions: list[Action] = []
        for output in outputs:
            if isinstance(output, Deliver):
                for stored in output.lines:
                    line = line_of(output.room, stored.seq, stored.payload)
                    if line is not None:
                        actions.append(Publish(line))
                if output.lines:
                    core.delivered(output.room, output.epoch, output.lines[-1].seq)
            elif isinstance(output, BusNotice):
                if core.echoed(output.room, output.payload):
                    continue
                notice = notice_of(output.room, output.payload)
                if notice is not None:
                    core.noticed(notice)
                    actions.append(Publish(notice))
            elif isinstance(output, Reset):
                log.warning(
                    "room %s: new epoch %s from seq %d", output.room, output.epoch, output.seq
                )
                core.delivered(output.room, output.epoch, output.seq)
            elif isinstance(output, Bell):
                actions += self._read_inbox()
            elif isinstance(output, BusUp):
                log.info("bus up%s", " again" if output.reconnected else "")
                actions += self._read_inbox()
            elif isinstance(output, BusDown):
                log.warning("bus down: %s", output.reason)
        return actions

    def _read_inbox(self) -> list[Action]:
        assert self.core is not None
        try:
            lines = self.engine.read_inbox(self._inbox_after)
        except EngineUnavailable:
            return []
        if not lines:
            return []
        self._inbox_after = lines[-1].id
        return self.core.inbox(lines)

    # --- timers -------------------------------------------------------------

    def timers(self, now: float) -> list[Action]:
        """Once a second: heartbeat, stale-bus check, reaper, inbox; nickname
        leases every third of their length. Called by the loop's tick."""
        mono = time.monotonic()
        if mono < self._next_tick:
            return []
        # Several heartbeats per lease, so one late turn does not fence us.
        self._next_tick = mono + min(CLUSTER_TICK, self.engine.settings.broker_ttl / 4000)
        core, follower, engine = self.core, self.follower, self.engine
        assert core is not None and follower is not None
        actions: list[Action] = []
        try:
            actions += self._recover(now)
            engine.heartbeat()
            actions += self._outputs(follower.check())
            actions += self._read_inbox()
            for dead in engine.dead_brokers():
                report = engine.reap(dead)
                if report is None:
                    continue
                log.info("reaped broker %s: %d memberships", dead, len(report.members))
                for reaped in report.members:
                    notice = LeaveNotice(
                        room=reaped.room, nick=reaped.member.nick, reason="timeout", ts=now
                    )
                    engine.publish(reaped.room, encode_body(notice))
            if mono >= self._next_refresh:
                self._next_refresh = mono + engine.settings.nick_lease / 3000
                lost = engine.refresh_nicks(core.leases())
                for key in lost:
                    log.info("the nickname %s is held elsewhere now", key)
                core.lost_sessions(engine.refresh_sessions([s.token for s in core.sessions]))
        except Fenced:
            core.fenced = True
        except EngineUnavailable as exc:
            log.warning("cluster engine: %s", exc)
        if core.fenced:
            actions += self._fenced()
        return actions

    def _fenced(self) -> list[Action]:
        """Our lease expired (paused, or cut off from Redis): the others may
        have reaped us. Take a new id and win everything back the fenced way."""
        log.error(
            "cluster: this broker's lease expired (paused or cut off); registering "
            "again and claiming its sessions' nicknames and rooms anew"
        )
        assert self.core is not None
        self.core.fenced = False
        if not self._rejoin:  # the id whose sessions we hold
            self._old_id = self.engine.broker_id
        self.engine.renew_id()
        self._registered = False
        self._next_tick = 0.0
        self._rejoin = True
        return []

    def _recover(self, now: float) -> list[Action]:
        assert self.core is not None
        if not self._registered:
            self.engine.register()
            self._registered = True
            self._inbox_after = "0-0"
            log.info("cluster: registered again as %s", self.engine.broker_id)
        if self._rejoin:
            # Reap our old self first, so that its nickname leases are free
            # for the new id (None: another broker is at it or was).
            reaped = self.engine.reap(self._old_id) if self._old_id else None
            actions = self.core.rejoin(now, reaped)
            self._rejoin = False
            return actions
        return []

    def close(self) -> None:
        """Stop the bus reader and release the engine."""
        if self.reader is not None:
            self.reader.close()
        self.engine.close()
