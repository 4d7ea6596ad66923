"""The broker's decisions, with no sockets: a message and the time in, actions out.

The event loop (broker/server.py) owns the sockets. For every request it calls
:meth:`BrokerCore.handle`, for every XPUB subscription notice
:meth:`BrokerCore.subscribed`, and a few times a second :meth:`BrokerCore.tick`;
it then sends what they return. All state lives here and is touched only from
that one loop, so there are no locks.

A session goes through two states (docs/PROTOCOL.md §5.1):

* syncing: ``hello`` accepted, nickname reserved, ``welcome`` sent; we wait
  for the client's SUB to subscribe to ``sync/<session>/0/``. Because a SUB
  sends its subscriptions in order, seeing that one proves the room topics
  subscribed before it are live, so no broadcast after ``joined`` is lost
  (the slow-joiner problem).
* active: a member of its rooms; others were told it joined.

``join`` for a further room waits the same way for ``sync/<session>/<n>/``.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Final

from broker import storage
from broker.history import HistoryStore, MemoryHistory, StorageError, Unstored
from broker.idempotency import KEY_MEMORY, KeyMemory
from broker.presence import away_notices, away_reply_once, joined_reply, topic_request
from broker.ratelimit import TokenBucket
from broker.sessions import SessionTable
from broker.topics import MemoryTopics, TopicStore
from protocol import (
    PROTOCOL_VERSION,
    SYNC_PREFIX,
    Ack,
    Away,
    Broadcast,
    Bye,
    ChatMessage,
    Error,
    ErrorCode,
    Goodbye,
    Hello,
    History,
    HistoryReply,
    Join,
    Joined,
    JoinNotice,
    JoinsNotice,
    LeaveNotice,
    Limits,
    ListRooms,
    NickNotice,
    Part,
    Parted,
    Ping,
    Pong,
    PrivateMessage,
    ProtocolError,
    Rename,
    Renamed,
    Reply,
    RoomInfo,
    RoomList,
    Say,
    SendPrivate,
    Shutdown,
    Topic,
    Welcome,
    Who,
    WhoReply,
    decode_request,
    nick_key,
    validate_key,
    validate_nick,
    validate_room,
    validate_text,
)
from protocol.codec import describe_request
from protocol.validation import MAX_NICK_LENGTH, MAX_ROOM_LENGTH, MAX_TEXT_BYTES

__all__ = ["Action", "BrokerConfig", "BrokerCore", "Publish", "Send"]

log = logging.getLogger("broker")

#: Largest frame the ROUTER accepts (ZMQ_MAXMSGSIZE): a 4 KiB line even with
#: every character JSON-escaped fits comfortably.
MAX_FRAME_BYTES: Final = 64 * 1024
#: Sync topics seen before their request, per session, before we forget them.
EARLY_SYNC_LIMIT: Final = 64
#: Most lines one history request returns.
MAX_HISTORY_LIMIT: Final = 1000
#: Most nicknames one ``joins`` notice lists (a 32-character nickname can take
#: 130 bytes of JSON, so 100 of them stay far below any frame limit).
JOINS_PER_NOTICE: Final = 100


# Not frozen: a frozen dataclass's __init__ goes through object.__setattr__
# and costs 0.2 µs more per action, two actions per line (docs/PERFORMANCE.md).
# Treat them as read-only all the same; unsafe_hash keeps them hashable.
@dataclass(slots=True, unsafe_hash=True)
class Send:
    """Send ``message`` privately to the client with this ROUTER identity."""

    identity: bytes
    message: Reply


@dataclass(slots=True, unsafe_hash=True)
class Publish:
    """Publish ``message`` on its room's PUB topic."""

    message: Broadcast


Action = Send | Publish


@dataclass(slots=True)
class BrokerConfig:
    """Tunable limits; every field has a command-line flag (broker/cli.py)."""

    pub_endpoint: str = "tcp://127.0.0.1:5556"
    client_timeout: float = 10.0
    heartbeat: float = 2.0
    max_clients: int = 10_000
    rooms_per_client: int = 50
    #: Flood control per client: lines per second (0 turns it off) and burst.
    max_rate: float = 5.0
    burst: int = 10
    #: History, who and room-list requests per second per client (0: no limit);
    #: the burst allows one repair per room after a reconnect (docs/SECURITY.md).
    max_history_rate: float = 10.0
    #: Largest request frame (ZMQ_MAXMSGSIZE); larger ones drop the connection.
    max_frame: int = MAX_FRAME_BYTES
    #: Registered nicknames: nick_key(nick) -> the Z85 CURVE public key that
    #: alone may use it (needs CURVE; see docs/SECURITY.md).
    nick_keys: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class _Session:
    identity: bytes
    nick: str
    token: str
    last_seen: float
    active: bool = False
    rooms: set[str] = field(default_factory=set)
    # sync number -> (rooms waiting for it, when asked)
    pending: dict[int, tuple[list[str], float]] = field(default_factory=dict)
    #: Made only when a sync overtakes its join (rare): an empty set per
    #: session would cost 216 bytes (docs/PERFORMANCE.md, memory).
    early_syncs: set[int] | None = None
    #: The CURVE public key (ZAP User-Id) of the connection that said hello,
    #: or None without CURVE: requests from any other key are refused.
    peer: str | None = None
    #: Flood control of lines, joins, parts and renames (anything that publishes).
    flood: TokenBucket = field(default_factory=lambda: TokenBucket(0, 1))
    #: Flood control of history, who and room-list requests.
    queries: TokenBucket = field(default_factory=lambda: TokenBucket(0, 1))
    #: The away message ("" : here), and the tokens of those already told it
    #: after a private line (docs/PROTOCOL.md "Away": once per away); the set
    #: is made when first needed (an empty one costs 216 bytes a session).
    away: str = ""
    away_told: set[str] | None = None


@dataclass(slots=True, eq=False)
class _Room:
    name: str
    seq: int
    # session token -> session, in joining order
    members: dict[str, _Session] = field(default_factory=dict)
    #: The members' nicknames in joining order, or None until asked for
    #: again after a part or a rename (see _nicks).
    nicks: list[str] | None = None
    #: Its away members' messages by nickname, or None until asked for
    #: again after a member went away or came back, parted or was renamed.
    away: dict[str, str] | None = None


class BrokerCore:
    """All broker state and every decision, driven by the event loop."""

    def __init__(
        self,
        config: BrokerConfig | None = None,
        history: HistoryStore | None = None,
        broker_id: str | None = None,
        topics: TopicStore | None = None,
    ) -> None:
        self.config = config or BrokerConfig()
        self.topics: TopicStore = topics if topics is not None else MemoryTopics()
        self.history: HistoryStore = history if history is not None else MemoryHistory()
        self.broker_id = broker_id or secrets.token_hex(8)
        #: Sessions and nicknames (broker/sessions.py keeps the indices in step).
        self.sessions: SessionTable[_Session] = SessionTable()
        # The table's identity index, for the hot path's one lookup per request.
        self._sessions = self.sessions.by_identity
        self._rooms: dict[str, _Room] = {}
        self._ids = 0
        #: Idempotency keys (broker/idempotency.py).
        self.keys = KeyMemory.of(self.history)
        # Its table, for the hot path's inline lookups.
        self._keys = self.keys.acks
        self._limits = Limits(
            text_bytes=MAX_TEXT_BYTES,
            nick_length=MAX_NICK_LENGTH,
            room_length=MAX_ROOM_LENGTH,
            rooms_per_client=self.config.rooms_per_client,
            frame_bytes=self.config.max_frame,
            rate=self.config.max_rate,
            burst=self.config.burst,
        )
        self._handlers = {
            Say: self._say,
            Ping: self._ping,
            SendPrivate: self._private,
            Join: self._join,
            Part: self._part,
            Rename: self._rename,
            Who: self._who,
            ListRooms: self._list_rooms,
            History: self._history,
            Bye: self._bye,
            Topic: lambda session, request, now: topic_request(self, session, request, now),
            Away: self._away,
        }

    # --- what the loop calls ---------------------------------------------

    def handle(
        self, identity: bytes, frames: list[bytes], now: float, peer: str | None = None
    ) -> list[Action]:
        """Decide what to do with the frames one client sent (after its routing id).

        ``peer`` is the connection's authenticated CURVE key (the ZAP User-Id),
        or None without CURVE; a session answers only to the key that made it.
        """
        session = self._sessions.get(identity)
        try:
            if session is not None and session.peer != peer:
                # A client can choose its routing id (ZMQ_ROUTING_ID) and so
                # reuse a departed client's; it cannot forge a key.
                session = None
                raise ProtocolError(
                    ErrorCode.SESSION_INVALID, "this connection does not own that session"
                )
            if session is not None:
                session.last_seen = now
            request = decode_request(frames)
            if isinstance(request, Hello):
                return self._hello(identity, session, request, now, peer)
            if session is None:
                raise ProtocolError(ErrorCode.NOT_JOINED, "no session: say hello first")
            if not session.active:
                raise ProtocolError(
                    ErrorCode.SYNCING,
                    "still joining: subscribe to your sync topic, then wait for joined",
                )
            kind = type(request)
            if kind in _FLOODING and not session.flood.take(now):
                raise _throttled(session.flood, "lines, joins, parts and renames")
            if kind in _QUERIES and not session.queries.take(now):
                raise _throttled(session.queries, "history, who and room-list requests")
            return self._handlers[kind](session, request, now)  # type: ignore[operator, no-any-return]
        except StorageError as exc:
            # A read of the store failed (a damaged page, an I/O error): this
            # request fails, the broker goes on (§7, §8).
            log.error("history: %s", exc)
            refusal = ProtocolError(
                ErrorCode.UNAVAILABLE, "the broker cannot read its history now; try again later"
            )
        except ProtocolError as exc:
            refusal = exc
        request_type, key, room = describe_request(frames)
        log.info(
            "refused %s from %s: %s",
            request_type or "frames",
            session.nick if session else identity.hex(),
            refusal,
        )
        error = Error(
            code=refusal.code, message=refusal.message, req=request_type, key=key, room=room
        )
        return [Send(identity, error)]

    def subscribed(self, notice: bytes, now: float) -> list[Action]:
        """React to an XPUB notice (``\\x01`` + topic for a subscription)."""
        if not notice.startswith(b"\x01" + SYNC_PREFIX):
            return []
        parts = notice[1 + len(SYNC_PREFIX) :].split(b"/")
        if len(parts) != 3 or parts[2] != b"" or not parts[1].isdigit():
            return []
        session = self.sessions.with_token(parts[0].decode("ascii", "replace"))
        if session is None:
            return []
        number = int(parts[1])
        if number not in session.pending:
            # The subscription overtook its join request: remember it briefly.
            early = session.early_syncs
            if early is None:
                early = session.early_syncs = set()
            elif len(early) >= EARLY_SYNC_LIMIT:
                early.clear()
            early.add(number)
            return []
        return self._synced(session, number, now)

    def subscribed_all(self, notices: list[bytes], now: float) -> list[Action]:
        """React to every XPUB notice the loop read in one turn.

        Joins that complete in the same room in one turn are announced with one
        ``joins`` notice instead of a ``join`` each (docs/PROTOCOL.md §5): when
        many clients join a busy room at once (everyone coming back to a
        restarted broker, a class logging in) per-join notices cost each member
        one message per joiner, and the broker's PUB queues hold all of them.
        """
        actions: list[Action] = []
        for notice in notices:
            actions += self.subscribed(notice, now)
        return _coalesce_joins(actions, now)

    def tick(self, now: float) -> list[Action]:
        """Expire silent clients and syncs that never came."""
        actions: list[Action] = []
        timeout = self.config.client_timeout
        for session in self.sessions:
            # A client still joining is silent until its SUB syncs: the loop
            # below drops it *with* a sync_timeout error saying why.
            if now - session.last_seen > timeout and (session.active or not session.pending):
                log.info("%s timed out", session.nick)
                actions += self._remove(session, "timeout", now)
                continue
            if not session.pending:  # almost every session, every tick
                continue
            for number, (rooms, since) in list(session.pending.items()):
                if now - since <= timeout:
                    continue
                del session.pending[number]
                if not session.active:
                    log.info("%s never subscribed; join abandoned", session.nick)
                    actions.append(
                        Send(
                            session.identity,
                            Error(
                                code=ErrorCode.SYNC_TIMEOUT,
                                message="your SUB socket never subscribed to the sync "
                                f"topic on {self.config.pub_endpoint}; join again",
                                req="hello",
                            ),
                        )
                    )
                    actions += self._remove(session, "timeout", now)
                    break
                actions.append(
                    Send(
                        session.identity,
                        Error(
                            code=ErrorCode.SYNC_TIMEOUT,
                            message="your SUB socket never subscribed to the sync topic",
                            req="join",
                            room=rooms[0],
                        ),
                    )
                )
        return actions

    def shutdown(self, now: float) -> list[Action]:
        """Tell every client the broker is going away."""
        notice = Shutdown(reason="the broker is shutting down")
        return [Send(s.identity, notice) for s in self.sessions]

    def unstored(self, refused: Unstored, actions: list[Action]) -> list[Action]:
        """The history could not store ``refused`` (lines of this turn): take
        them back. ``actions`` (what the turn decided) comes back without their
        broadcasts and acks, and with an ``unavailable`` error to each sender
        instead (echoing the key, so the client resends it later); room numbers
        and remembered keys go back to what is stored (docs/PROTOCOL.md §7)."""
        for line, key in refused:
            room = self._rooms.get(line.room)
            if room is not None:
                room.seq = self.history.last_seq(line.room)
            if key is not None:
                self.keys.forget(key, line.id)  # so that the resend is stored

        def sender_of(line: ChatMessage) -> bytes | None:
            session = self.sessions.with_nick(line.nick)
            return session.identity if session is not None else None

        return storage.refuse_unstored(refused, actions, sender_of, Publish, Send)

    def unreachable(self, identity: bytes) -> None:
        """The ROUTER could not route to ``identity`` (ROUTER_MANDATORY): its
        connection is gone. Keep the session for a resume; heartbeats decide."""

    @property
    def session_count(self) -> int:
        """Clients connected (joined or still joining)."""
        return len(self.sessions)

    # --- joining ---------------------------------------------------------

    def _hello(
        self,
        identity: bytes,
        session: _Session | None,
        hello: Hello,
        now: float,
        peer: str | None = None,
    ) -> list[Action]:
        if hello.v != PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorCode.BAD_VERSION,
                f"this broker speaks protocol version {PROTOCOL_VERSION}, not {hello.v}",
            )
        if session is not None:
            raise ProtocolError(ErrorCode.ALREADY_JOINED, f"already joined as {session.nick}")
        nick = validate_nick(hello.nick)
        rooms = list(dict.fromkeys(validate_room(r) for r in hello.rooms))
        if len(rooms) > self.config.rooms_per_client:
            raise ProtocolError(
                ErrorCode.TOO_MANY_ROOMS,
                f"at most {self.config.rooms_per_client} rooms per client",
            )
        resumed = self.sessions.with_token(hello.resume) if hello.resume else None
        if (
            resumed is not None
            and nick_key(resumed.nick) == nick_key(nick)
            and resumed.peer == peer
        ):
            # The same client on a new connection (a new routing id): rebind.
            self.sessions.rebind(resumed, identity)
            resumed.last_seen = now
            resumed.pending = {0: (rooms, now)}
            resumed.early_syncs = None
            log.info("%s resumed its session", nick)
            return [Send(identity, self._welcome(resumed))]
        if self.sessions.with_nick(nick) is not None:
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"the nickname {nick!r} is taken")
        self._check_registered(nick, peer)
        if len(self.sessions) >= self.config.max_clients:
            raise ProtocolError(
                ErrorCode.TOO_MANY_CLIENTS,
                f"the broker is full ({self.config.max_clients} clients)",
            )
        token = self._new_token(hello, nick, peer)
        session = _Session(
            identity=identity,
            nick=nick,
            token=token,
            last_seen=now,
            pending={0: (rooms, now)},
            peer=peer,
            flood=TokenBucket(self.config.max_rate, max(1, self.config.burst)),
            queries=TokenBucket(
                self.config.max_history_rate,
                self.config.rooms_per_client + max(1, int(self.config.max_history_rate)),
            ),
        )
        self.sessions.add(session)
        return [Send(identity, self._welcome(session))]

    def _new_token(self, hello: Hello, nick: str, peer: str | None) -> str:
        """The token of a session about to be made (cluster mode may adopt the
        one a client resumes with from another broker)."""
        return secrets.token_urlsafe(18)

    def _welcome(self, session: _Session) -> Welcome:
        return Welcome(
            v=PROTOCOL_VERSION,
            nick=session.nick,
            session=session.token,
            pub=self.config.pub_endpoint,
            broker=self.broker_id,
            heartbeat=self.config.heartbeat,
            timeout=self.config.client_timeout,
            limits=self._limits,
            epoch=self.history.epoch,
        )

    def _synced(self, session: _Session, number: int, now: float) -> list[Action]:
        rooms, _ = session.pending.pop(number)
        if not session.pending:
            # A dict keeps its table when emptied; a new empty one has none
            # (64 bytes instead of 224, for as long as the session lasts).
            session.pending = {}
        actions: list[Action] = []
        if not session.active:
            session.active = True
            log.info("%s joined", session.nick)
        for name in rooms:
            if name in session.rooms:
                room = self._rooms[name]
                actions.append(Send(session.identity, self._joined(room)))
            else:
                actions += self._enter(session, name, now)
        return actions

    def _enter(self, session: _Session, name: str, now: float) -> list[Action]:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = _Room(name=name, seq=self.history.last_seq(name))
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

    def _join(self, session: _Session, request: Join, now: float) -> list[Action]:
        name = validate_room(request.room)
        if name in session.rooms:
            room = self._rooms[name]
            return [Send(session.identity, self._joined(room))]
        waiting = sum(len(rooms) for rooms, _ in session.pending.values())
        if len(session.rooms) + waiting >= self.config.rooms_per_client:
            raise ProtocolError(
                ErrorCode.TOO_MANY_ROOMS,
                f"at most {self.config.rooms_per_client} rooms per client",
            )
        if request.sync in session.pending or request.sync < 1:
            raise ProtocolError(
                ErrorCode.BAD_MESSAGE, f"sync number {request.sync} is in use or below 1"
            )
        session.pending[request.sync] = ([name], now)
        if session.early_syncs and request.sync in session.early_syncs:
            session.early_syncs.discard(request.sync)
            return self._synced(session, request.sync, now)
        return []

    # --- leaving ---------------------------------------------------------

    def _part(self, session: _Session, request: Part, now: float) -> list[Action]:
        name = validate_room(request.room)
        if name not in session.rooms:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {name}")
        actions = self._leave_room(session, name, "part", now)
        actions.append(Send(session.identity, Parted(room=name)))
        return actions

    def _bye(self, session: _Session, request: Bye, now: float) -> list[Action]:
        identity = session.identity
        actions = self._remove(session, "exit", now)
        actions.append(Send(identity, Goodbye()))
        return actions

    def _remove(self, session: _Session, reason: str, now: float) -> list[Action]:
        actions: list[Action] = []
        for name in list(session.rooms):
            actions += self._leave_room(session, name, reason, now)
        self.sessions.remove(session)
        if session.active:
            log.info("%s left (%s)", session.nick, reason)
        session.active = False
        return actions

    def _leave_room(self, session: _Session, name: str, reason: str, now: float) -> list[Action]:
        room = self._rooms[name]
        del room.members[session.token]
        room.nicks = room.away = None
        session.rooms.discard(name)
        if not room.members:
            del self._rooms[name]  # its sequence number lives on in the history store
        return [Publish(LeaveNotice(room=name, nick=session.nick, reason=reason, ts=now))]

    # --- talking ---------------------------------------------------------

    def _say(self, session: _Session, request: Say, now: float) -> list[Action]:
        # The hot path: every line of every client comes here, so helpers are
        # inlined and the common case is checked cheaply (docs/PERFORMANCE.md).
        name = request.room
        if name not in session.rooms:
            name = validate_room(name)
            if name not in session.rooms:
                raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {name}")
        text = request.text
        # ASCII text that is not blank and not too long is valid without
        # encoding it; anything else gets the full check and its error.
        if not text.isascii() or len(text) > MAX_TEXT_BYTES or not text or text.isspace():
            validate_text(text)
        key = request.key
        if key is not None:
            validate_key(key)
            earlier = self._keys.get(key)
            if earlier is not None:
                return [Send(session.identity, earlier)]  # a resend: never publish twice
        room = self._rooms[name]
        room.seq = seq = room.seq + 1
        self._ids = ids = self._ids + 1
        line = ChatMessage(
            room=name,
            nick=session.nick,
            text=text,
            ts=now,
            id=f"{self.broker_id}-{ids:x}",
            seq=seq,
            action=request.action,
        )
        self.history.append(line, key)
        if key is None:
            return [Publish(line)]
        keys = self._keys  # KeyMemory.remember, inlined: once per keyed line
        keys[key] = ack = Ack(key=key, id=line.id, room=name, seq=seq)
        if len(keys) > KEY_MEMORY:
            keys.popitem(last=False)
        return [Publish(line), Send(session.identity, ack)]

    def _private(self, session: _Session, request: SendPrivate, now: float) -> list[Action]:
        validate_text(request.text)
        key = request.key
        if key is not None:
            validate_key(key)
            earlier = self._keys.get(key)
            if earlier is not None:
                return [Send(session.identity, earlier)]
        target = self.sessions.with_nick(request.to)
        if target is None or not target.active:
            raise ProtocolError(ErrorCode.NO_SUCH_NICK, f"nobody called {request.to!r} is here")
        line = PrivateMessage(
            nick=session.nick,
            to=target.nick,
            text=request.text,
            ts=now,
            id=self._next_id(),
            action=request.action,
            key=key,
        )
        actions: list[Action] = [Send(target.identity, line)]
        if target is not session:
            actions.append(Send(session.identity, line))  # the sender's copy
            actions += away_reply_once(session, target)
        if key is not None:
            actions.append(Send(session.identity, self._remember(Ack(key=key, id=line.id))))
        return actions

    def _rename(self, session: _Session, request: Rename, now: float) -> list[Action]:
        new = validate_nick(request.nick)
        old = session.nick
        holder = self.sessions.with_nick(new)
        if holder is not None and holder is not session:
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"the nickname {new!r} is taken")
        self._check_registered(new, session.peer)
        self.sessions.rename(session, new)
        for name in session.rooms:
            room = self._rooms[name]
            room.nicks = room.away = None
        log.info("%s is now %s", old, new)
        notice_id = self._next_id()
        actions: list[Action] = [
            Publish(NickNotice(room=name, old=old, new=new, ts=now, id=notice_id))
            for name in sorted(session.rooms)
        ]
        actions.append(Send(session.identity, Renamed(old=old, new=new)))
        return actions

    # --- asking ----------------------------------------------------------

    def _who(self, session: _Session, request: Who, now: float) -> list[Action]:
        name = validate_room(request.room)
        room = self._rooms.get(name)
        if room is None:
            return [Send(session.identity, WhoReply(room=name, members=[]))]
        return [
            Send(session.identity, WhoReply(room=name, members=_nicks(room), away=_away_map(room)))
        ]

    def _list_rooms(self, session: _Session, request: ListRooms, now: float) -> list[Action]:
        rooms = [
            RoomInfo(room=r.name, members=len(r.members))
            for r in sorted(self._rooms.values(), key=lambda r: r.name)
        ]
        return [Send(session.identity, RoomList(rooms=rooms))]

    def _history(self, session: _Session, request: History, now: float) -> list[Action]:
        name = validate_room(request.room)
        if name not in session.rooms:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {name}")
        limit = max(0, min(request.limit, MAX_HISTORY_LIMIT))
        lines, missed = self.history.fetch(
            name, max(0, request.after), request.before, limit, request.forward
        )
        seq = self._rooms[name].seq
        reply = HistoryReply(
            room=name, messages=lines, missed=missed, seq=seq, epoch=self.history.room_epoch(name)
        )
        return [Send(session.identity, reply)]

    def _ping(self, session: _Session, request: Ping, now: float) -> list[Action]:
        seqs = {name: self._rooms[name].seq for name in session.rooms}
        epoch = self.history.room_epoch
        epochs = {name: epoch(name) for name in session.rooms}
        return [Send(session.identity, Pong(broker=self.broker_id, seqs=seqs, epochs=epochs))]

    # --- helpers ---------------------------------------------------------

    def _joined(self, room: _Room) -> Joined:
        return joined_reply(
            self, room, self.history.room_epoch(room.name), _nicks(room), _away_map(room)
        )

    def _away(self, session: _Session, request: Away, now: float) -> list[Action]:
        actions = away_notices(session, request, now)
        for name in session.rooms:
            self._rooms[name].away = None
        return actions

    def _check_registered(self, nick: str, peer: str | None) -> None:
        owner = self.config.nick_keys.get(nick_key(nick))
        if owner is not None and owner != peer:
            raise ProtocolError(
                ErrorCode.NICK_TAKEN, f"the nickname {nick!r} is registered to another key"
            )

    def _next_id(self) -> str:
        self._ids += 1
        return f"{self.broker_id}-{self._ids:x}"

    def _remember(self, ack: Ack) -> Ack:
        return self.keys.remember(ack)


#: Requests that publish to a room (or reach another client): the flood bucket.
_FLOODING: Final = frozenset({Say, SendPrivate, Join, Part, Rename, Away})
#: Requests that only cost the broker work: the query bucket.
_QUERIES: Final = frozenset({History, Who, ListRooms, Topic})


def _throttled(bucket: TokenBucket, what: str) -> ProtocolError:
    return ProtocolError(
        ErrorCode.RATE_LIMITED,
        f"too many {what}: at most {bucket.rate:g} a second (bursts of {bucket.burst:g}); "
        f"not delivered, try again in {max(bucket.retry_after(), 0.01):.2f} s",
    )


def _coalesce_joins(actions: list[Action], now: float) -> list[Action]:
    """``actions`` with the join notices of each room merged into ``joins``
    notices, ahead of everything else (a turn of subscriptions publishes
    nothing but join notices, so no broadcast is reordered)."""
    joins: dict[str, list[str]] = {}
    others: list[Action] = []
    for action in actions:
        if type(action) is Publish and type(action.message) is JoinNotice:
            joins.setdefault(action.message.room, []).append(action.message.nick)
        else:
            others.append(action)
    if all(len(nicks) < 2 for nicks in joins.values()):
        return actions
    merged: list[Action] = []
    for room, nicks in joins.items():
        for start in range(0, len(nicks), JOINS_PER_NOTICE):
            chunk = nicks[start : start + JOINS_PER_NOTICE]
            if len(chunk) == 1:
                merged.append(Publish(JoinNotice(room=room, nick=chunk[0], ts=now)))
            else:
                merged.append(Publish(JoinsNotice(room=room, nicks=chunk, ts=now)))
    return merged + others


def _away_map(room: _Room) -> dict[str, str]:
    """The away members' messages by nickname, for ``joined`` and ``who``:
    kept per room like :func:`_nicks`, so a join does not walk the room. Never
    changed in place (only dropped and made anew), so replies may share it."""
    away = room.away
    if away is None:
        away = room.away = {s.nick: s.away for s in room.members.values() if s.away}
    return away


def _nicks(room: _Room) -> list[str]:
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
