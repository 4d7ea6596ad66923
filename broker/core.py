"""The broker's decisions, with no sockets: a message and the time in, actions out.

The event loop (broker/server.py) owns the sockets. For every request it calls
:meth:`BrokerCore.handle`, for every XPUB subscription notice
:meth:`BrokerCore.subscribed`, and a few times a second :meth:`BrokerCore.tick`;
it then sends what they return. All state lives in the core and its parts
(see :class:`BrokerCore`) and is touched only from that one loop, so there
are no locks.

A session goes through two states (docs/PROTOCOL.md §5.1):

* syncing: ``hello`` accepted, nickname reserved, ``welcome`` sent; we wait
  for the client's SUB to subscribe to ``sync/<session>/0/``. Because a SUB
  sends its subscriptions in order, seeing that one proves the room topics
  subscribed before it are live, so no broadcast after ``joined`` is lost
  (the slow-joiner problem).
* active: a member of its rooms; others were told it joined.

``join`` for a further room waits the same way for ``sync/<session>/<n>/``
(broker/handshake.py).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Final

from broker import storage
from broker.actions import Action, Forward, Publish, Send
from broker.directory import Directory, LocalDirectory
from broker.handshake import coalesce_joins, expire_syncs, overtaken, sync_of
from broker.history import HistoryStore, MemoryHistory, StorageError, Unstored
from broker.idempotency import KeyMemory
from broker.ledger import Ledger, LocalLedger
from broker.presence import away_notices, away_reply_once, topic_request
from broker.ratelimit import TokenBucket
from broker.rooms import LocalRooms, Rooms
from broker.sessions import Session, SessionTable
from broker.topics import MemoryTopics, TopicStore
from protocol import (
    PROTOCOL_VERSION,
    Ack,
    Away,
    Bye,
    ChatMessage,
    Error,
    ErrorCode,
    Goodbye,
    Hello,
    History,
    Join,
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
    RoomList,
    Say,
    SendPrivate,
    Shutdown,
    Topic,
    Welcome,
    Who,
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
#: Most lines one history request returns.
MAX_HISTORY_LIMIT: Final = 1000


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


# The session's type under the name the core's helpers know it by.
_Session = Session


class BrokerCore:
    """Every decision, driven by the event loop; the state lives in its parts.

    The parts, each owning one thing: ``sessions`` (this broker's sessions
    and nicknames), ``rooms`` (membership and each room's numbering),
    ``ledger`` (sequencing and history), ``directory`` (nicknames and sessions
    beyond this broker) and ``keys`` (idempotency keys of private lines, and
    of lines where the ledger shares them). Without ``rooms``, ``ledger`` and
    ``directory`` the core is one broker on its history store (SQLite or
    memory); cluster mode gives it parts on the engine (broker/cluster.py).
    """

    def __init__(
        self,
        config: BrokerConfig | None = None,
        history: HistoryStore | None = None,
        broker_id: str | None = None,
        topics: TopicStore | None = None,
        *,
        rooms: Rooms | None = None,
        ledger: Ledger | None = None,
        directory: Directory | None = None,
    ) -> None:
        self.config = config or BrokerConfig()
        self.history: HistoryStore = history if history is not None else MemoryHistory()
        self.broker_id = broker_id or secrets.token_hex(8)
        #: Sessions and nicknames (broker/sessions.py keeps the indices in step).
        self.sessions: SessionTable[_Session] = SessionTable()
        # The table's identity index, for the hot path's one lookup per request.
        self._sessions = self.sessions.by_identity
        #: Idempotency keys (broker/idempotency.py).
        self.keys = KeyMemory.of(self.history)
        topics = topics if topics is not None else MemoryTopics()
        self.rooms: Rooms = rooms if rooms is not None else LocalRooms(self.history, topics)
        self.rooms.topics = topics
        # The rooms by name, for the hot path's inline lookups.
        self._rooms = self.rooms.by_name
        self.ledger: Ledger = (
            ledger
            if ledger is not None
            else LocalLedger(self.history, self._rooms, self.keys, self.broker_id)
        )
        # The ledger's keys (the key memory's table in SQLite mode), and its
        # record, for the hot path's inline lookups.
        self._keys = self.ledger.say_keys
        self._record = self.ledger.record
        self.directory: Directory = directory if directory is not None else LocalDirectory()
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

    @property
    def topics(self) -> TopicStore:
        """The room topics (kept by the rooms part, which ``joined`` needs)."""
        return self.rooms.topics

    @topics.setter
    def topics(self, topics: TopicStore) -> None:
        self.rooms.topics = topics

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
        sync = sync_of(notice)
        if sync is None:
            return []
        token, number = sync
        session = self.sessions.with_token(token)
        if session is None:
            return []
        if number not in session.pending:
            overtaken(session, number)
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
        return coalesce_joins(actions, now)

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
            actions += expire_syncs(session, now, timeout, self.config.pub_endpoint)
            if not session.active and not session.pending:
                actions += self._remove(session, "timeout", now)  # its hello's sync never came
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
            self.directory.save(resumed)
            return [Send(identity, self._welcome(resumed))]
        if self.sessions.with_nick(nick) is not None:
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"the nickname {nick!r} is taken")
        self._check_registered(nick, peer)
        if len(self.sessions) >= self.config.max_clients:
            raise ProtocolError(
                ErrorCode.TOO_MANY_CLIENTS,
                f"the broker is full ({self.config.max_clients} clients)",
            )
        # A session another broker held comes with its nickname (cluster mode);
        # a new one claims the nickname beyond this broker too.
        token = self.directory.adopt(hello, nick, peer) if hello.resume else None
        if token is None:
            token = secrets.token_urlsafe(18)
            if not self.directory.claim(nick, token):
                raise ProtocolError(ErrorCode.NICK_TAKEN, f"the nickname {nick!r} is taken")
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
        self.directory.save(session)
        return [Send(identity, self._welcome(session))]

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
            epoch=self.ledger.epoch,
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
        enter = self.rooms.enter
        for name in rooms:
            actions += enter(session, name, now)
        return actions

    def _join(self, session: _Session, request: Join, now: float) -> list[Action]:
        name = validate_room(request.room)
        if name in session.rooms:
            return [Send(session.identity, self.rooms.joined(name))]
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
        actions = self.rooms.leave(session, name, "part", now)
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
            actions += self.rooms.leave(session, name, reason, now)
        self.sessions.remove(session)
        self.directory.drop(session)
        if session.active:
            log.info("%s left (%s)", session.nick, reason)
        session.active = False
        return actions

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
        # Numbered and stored here, or proposed to the engine (broker/ledger.py).
        return self._record(session, name, request, now)

    def _private(self, session: _Session, request: SendPrivate, now: float) -> list[Action]:
        validate_text(request.text)
        key = request.key
        if key is not None:
            validate_key(key)
            earlier = self.keys.get(key)
            if earlier is not None:
                return [Send(session.identity, earlier)]
        target = self.sessions.with_nick(request.to)
        route = None
        if target is None or not target.active:
            # Not here: maybe on another broker of the cluster.
            route = self.directory.locate(request.to)
            if route is None:
                raise ProtocolError(ErrorCode.NO_SUCH_NICK, f"nobody called {request.to!r} is here")
        line = PrivateMessage(
            nick=session.nick,
            to=request.to if target is None or route is not None else target.nick,
            text=request.text,
            ts=now,
            id=self.ledger.next_id(),
            action=request.action,
            key=key,
        )
        actions: list[Action] = []
        if route is not None:
            forward = Forward(session.identity, route[0], route[1], line)
            actions.append(forward)  # type: ignore[arg-type]  # the cluster shell's
            actions.append(Send(session.identity, line))
        else:
            assert target is not None
            actions.append(Send(target.identity, line))
            if target is not session:
                actions.append(Send(session.identity, line))  # the sender's copy
                actions += away_reply_once(session, target)
        if key is not None:
            actions.append(Send(session.identity, self.keys.remember(Ack(key=key, id=line.id))))
        return actions

    def _rename(self, session: _Session, request: Rename, now: float) -> list[Action]:
        new = validate_nick(request.nick)
        old = session.nick
        holder = self.sessions.with_nick(new)
        if holder is not None and holder is not session:
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"the nickname {new!r} is taken")
        self._check_registered(new, session.peer)
        renamed = nick_key(new) != nick_key(old)
        if renamed and not self.directory.claim(new, session.token):
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"the nickname {new!r} is taken")
        self.sessions.rename(session, new)
        self.rooms.renamed(session, old)
        if renamed:
            self.directory.release(old, session.token)
        self.directory.save(session)
        log.info("%s is now %s", old, new)
        notice_id = self.ledger.next_id()
        actions: list[Action] = [
            Publish(NickNotice(room=name, old=old, new=new, ts=now, id=notice_id))
            for name in sorted(session.rooms)
        ]
        actions.append(Send(session.identity, Renamed(old=old, new=new)))
        return actions

    # --- asking ----------------------------------------------------------

    def _who(self, session: _Session, request: Who, now: float) -> list[Action]:
        return [Send(session.identity, self.rooms.who(validate_room(request.room)))]

    def _list_rooms(self, session: _Session, request: ListRooms, now: float) -> list[Action]:
        return [Send(session.identity, RoomList(rooms=self.rooms.listing()))]

    def _history(self, session: _Session, request: History, now: float) -> list[Action]:
        name = validate_room(request.room)
        if name not in session.rooms:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {name}")
        limit = max(0, min(request.limit, MAX_HISTORY_LIMIT))
        reply = self.ledger.fetch(
            name, max(0, request.after), request.before, limit, request.forward
        )
        return [Send(session.identity, reply)]

    def _ping(self, session: _Session, request: Ping, now: float) -> list[Action]:
        seqs = {name: self._rooms[name].seq for name in session.rooms}
        epoch = self.rooms.epoch
        epochs = {name: epoch(name) for name in session.rooms}
        return [Send(session.identity, Pong(broker=self.broker_id, seqs=seqs, epochs=epochs))]

    # --- helpers ---------------------------------------------------------

    def _away(self, session: _Session, request: Away, now: float) -> list[Action]:
        actions = away_notices(session, request, now)
        self.rooms.away_changed(session)
        return actions

    def _check_registered(self, nick: str, peer: str | None) -> None:
        owner = self.config.nick_keys.get(nick_key(nick))
        if owner is not None and owner != peer:
            raise ProtocolError(
                ErrorCode.NICK_TAKEN, f"the nickname {nick!r} is registered to another key"
            )


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
