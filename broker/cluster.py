"""Cluster mode: the broker's core and loop on a shared engine (docs/CLUSTER.md).

Two parts, as in SQLite mode:

* :class:`ClusterCore` is :class:`~broker.core.BrokerCore` with its parts on
  the engine (broker/cluster_parts.py: rooms and membership, sequencing and
  history, nicknames and sessions beyond this broker), so every request is
  decided by the same code in both modes. A line is not numbered here:
  ``say`` proposes it (:class:`Append`) and the shell hands back the engine's
  result (a seq, a duplicate's seq, or ``unavailable``). Notices go out on the
  engine's bus, never straight to XPUB, so every broker relays one order per
  room. What the class adds are the events only a cluster has: the bus's
  notices, the inbox, losing sessions to another broker, and winning them
  back after being fenced.
* :class:`ClusterShell` runs what the core proposed against the engine
  (every room's lines of one loop turn in one pipelined round trip, private
  lines into other brokers' inboxes), turns what the bus brings into
  broadcasts, and keeps the timers: heartbeat, stale-bus check, nickname
  leases, the reaper.

Both parts run on the broker's one thread. Importing this module imports
redis: SQLite mode never does (broker/cli.py imports it only for ``--engine``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Final, cast

import zmq

from broker.actions import Forward
from broker.cluster_parts import (
    UNAVAILABLE_MESSAGE,
    Append,
    EngineDirectory,
    EngineLedger,
    EngineRooms,
    PublishHere,
    line_of,
    member_of,
    unavailable_message,
)
from broker.core import Action, BrokerConfig, BrokerCore, Publish, Send
from broker.engine import (
    BusReader,
    Engine,
    EngineError,
    EngineUnavailable,
    Fenced,
    Follower,
    InboxLine,
    NewLine,
    ReapReport,
    RedisEngine,
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
    Error,
    ErrorCode,
    JoinNotice,
    LeaveNotice,
    PrivateMessage,
    ProtocolError,
    decode_broadcast,
    decode_reply,
    nick_key,
    room_topic,
)
from protocol.codec import describe_request, encode_body

__all__ = ["Append", "ClusterCore", "ClusterShell", "PublishHere", "line_of"]

log = logging.getLogger("broker")

#: Seconds between heartbeats, stale-bus checks, reaper rounds and inbox reads.
CLUSTER_TICK: Final = 1.0
#: Seconds the engine is not asked again after it was unavailable
#: (broker/engine/breaker.py): a stalled Redis costs one timeout, not one per call.
BREAKER_COOLDOWN: Final = 1.0


class ClusterCore(BrokerCore):
    """:class:`BrokerCore` with numbering, history, nicknames and membership
    in the engine shared by every broker of the cluster."""

    def __init__(self, config: BrokerConfig, engine: Engine, follower: Follower) -> None:
        history = MemoryHistory(per_room=1)  # unused: history lives in the engine
        directory = EngineDirectory(engine)
        #: The rooms part, with what only the cluster has (relayed seqs,
        #: away messages from the bus, leaves to retry).
        self.engine_rooms = EngineRooms(engine, follower, directory)
        super().__init__(
            config,
            history,
            broker_id=engine.broker_id,
            rooms=self.engine_rooms,
            ledger=EngineLedger(engine, history.epoch),
            directory=directory,
        )
        self.engine = engine
        self.follower = follower
        self._directory = directory
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
            self.engine_rooms.retry_leaves()
            return actions
        except Fenced:
            self.fenced = True
            return []

    # --- events only a cluster has ------------------------------------------

    def delivered(self, room: str, epoch: str, seq: int) -> None:
        """The shell relayed a room's lines up to ``seq`` (pong and joined use it)."""
        self.engine_rooms.delivered(room, epoch, seq)

    def echoed(self, room: str, payload: bytes) -> bool:
        """Whether a bus notice is one already published here (PublishHere)."""
        return self.engine_rooms.echoed(room, payload)

    def noticed(self, notice: Broadcast) -> None:
        """A notice from the bus: keep what replies need from it (who is
        away), whichever broker it came from. Topics are in the engine."""
        kind = type(notice)
        away = self.engine_rooms.away_seen
        if kind is AwayNotice:
            if notice.text:  # type: ignore[union-attr]
                away[nick_key(notice.nick)] = notice.text  # type: ignore[union-attr]
            else:
                away.pop(nick_key(notice.nick), None)  # type: ignore[union-attr]
        elif kind is LeaveNotice:
            away.pop(nick_key(notice.nick), None)  # type: ignore[union-attr]

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

    def unforwarded(self, forward: Forward) -> None:
        """The shell could not hand a private line to its broker: forget its
        key, so that the resend is sent."""
        if forward.line.key is not None:
            self.keys.forget(forward.line.key, forward.line.id)

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
        self.engine_rooms.forget_leaves()
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
                    self.engine_rooms.drop(session, name)
                self.sessions.remove(session)
                continue
            for name in session.rooms:
                join: bytes | None = None
                if (name, session.token) not in ours:
                    join = encode_body(JoinNotice(room=name, nick=session.nick, ts=now))
                self.engine.join(name, member_of(self.engine, session), join)
            self._directory.save(session)
        return []

    def lost_sessions(self, tokens: list[str]) -> None:
        """Sessions whose records we no longer hold: taken over by another
        broker (their clients resumed there: forget them here without a word
        to the engine or the rooms), or lost by Redis (save them again)."""
        for token in tokens:
            session = self.sessions.with_token(token)
            if session is None:
                continue
            if self.engine.nick_holder(nick_key(session.nick)) == (self.engine.broker_id, token):
                self._directory.save(session)  # still ours: the record was lost, not taken
                continue
            log.info("%s moved to another broker", session.nick)
            for name in list(session.rooms):
                self.engine_rooms.drop(session, name)
            self.sessions.remove(session)

    # --- helpers ------------------------------------------------------------

    def _unavailable(self, identity: bytes, frames: list[bytes], exc: EngineError) -> Action:
        if isinstance(exc, Fenced):
            self.fenced = True
        request_type, key, room = describe_request(frames)
        log.warning("refused %s: engine: %s", request_type or "frames", exc)
        error = Error(
            code=ErrorCode.UNAVAILABLE,
            message=unavailable_message(request_type),
            req=request_type,
            key=key,
            room=room,
        )
        return Send(identity, error)


def notice_of(room: str, payload: bytes) -> Broadcast | None:
    """A notice from the bus (join, leave, rename), or None if it is not one."""
    try:
        return decode_broadcast([room_topic(room), payload])
    except ProtocolError:
        log.warning("room %s: a bus notice that is not a broadcast: %r", room, payload[:80])
        return None


def _original_id(room: str, seq: int, payload: bytes | None) -> str | None:
    """The id of the line a duplicate repeats, for the original ack
    (docs/PROTOCOL.md §5.5); None when the engine no longer has it."""
    line = None if payload is None else line_of(room, seq, payload)
    return None if line is None else line.id


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
        # No reaping before this (monotonic): after we could not reach the
        # engine, the others' leases may have run out for the same reason.
        self._reap_from = 0.0
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
        onto the bus; private lines into their brokers' inboxes. Returns what
        the loop sends now."""
        out: list[Action] = []
        batches: dict[str, list[Append]] = {}
        notices: list[Broadcast] = []
        forwards: list[Forward] = []
        for action in cast(list[object], actions):
            if isinstance(action, Append):
                batches.setdefault(action.line.room, []).append(action)
            elif isinstance(action, Publish):
                notices.append(action.message)
            elif isinstance(action, Forward):
                forwards.append(action)
            elif isinstance(action, PublishHere):
                out.append(Publish(action.message))
            else:
                out.append(cast(Action, action))
        if forwards:
            out = self._forward(forwards, out)
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

    def _forward(self, forwards: list[Forward], out: list[Action]) -> list[Action]:
        """Private lines to sessions on other brokers, into their inboxes.
        One the engine did not take is refused: its sender gets
        ``unavailable`` (with the key) instead of its copy and its ack."""
        assert self.core is not None
        failed: set[str] = set()
        for forward in forwards:
            line = forward.line
            try:
                self.engine.send_private(
                    forward.broker, forward.token.encode() + b"\n" + encode_body(line)
                )
            except (EngineUnavailable, Fenced) as exc:
                if isinstance(exc, Fenced):
                    self.core.fenced = True
                log.warning("refused msg: engine: %s", exc)
                self.core.unforwarded(forward)
                failed.add(line.id)
                error = Error(
                    code=ErrorCode.UNAVAILABLE, message=UNAVAILABLE_MESSAGE, req="msg", key=line.key
                )
                out.append(Send(forward.identity, error))
        if not failed:
            return out
        return [
            a
            for a in out
            if not (
                type(a.message) in (PrivateMessage, Ack) and a.message.id in failed  # type: ignore[union-attr]
            )
        ]

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
            if not result.confirmed:  # type: ignore[attr-defined]
                continue  # stored, not yet on enough replicas: the resend asks again
            seqs = result.seqs  # type: ignore[attr-defined]
            originals = {d.index: d.payload for d in result.duplicates}  # type: ignore[attr-defined]
            for index, (a, seq) in enumerate(zip(items, seqs, strict=True)):
                if a.key is not None:
                    line_id = _original_id(room, seq, originals.get(index)) or a.line.id
                    out.append(Send(a.identity, Ack(key=a.key, id=line_id, room=room, seq=seq)))
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
            for dead in engine.dead_brokers() if mono >= self._reap_from else ():
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
            # Redis down for everybody (a restart) fences every broker: give
            # the others time to register again and win their sessions
            # back silently before reaping what is left of their old ids, or
            # all their members are seen leaving and joining again.
            # Two leases: clients of a broker that died meanwhile come back
            # with their grown back-off (up to 6 s) to resume their sessions.
            self._reap_from = mono + 2 * engine.settings.broker_ttl / 1000
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
