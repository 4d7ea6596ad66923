"""The client's session core, with no sockets: shared by ``Client``,
``AsyncClient``, the CLI and bots (docs/PROTOCOL.md §5).

The front-end feeds it what arrives (:meth:`ClientSession.on_reply`,
:meth:`ClientSession.on_broadcast`) and the time (:meth:`ClientSession.tick`),
calls user operations (:meth:`say`, :meth:`join`...), and after each call
carries out :meth:`take_output`: reset the sockets, connect the SUB, change
subscriptions, send requests, in that order.

States and the moves between them (``_TRANSITIONS``)::

    idle --hello--> joining --joined--> joined --bye--> closing --goodbye--> closed
      ^                |                  |
      +----refused-----+                  +--silence, not_joined--> reconnecting
                                                                       |
                       joined <---------------resumed------------------+

What it guarantees for room lines (Clone pattern): each is delivered once, in
sequence order. A gap, seen in the numbers or in a pong, is filled from the
broker's history before later lines are let through; lines the history no longer
has are reported as a ``missed`` event.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import urlsplit

from client import events as ev
from client.pacing import RateLimiter
from protocol import (
    PROTOCOL_VERSION,
    Ack,
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
    Request,
    RoomList,
    Say,
    SendPrivate,
    Shutdown,
    Welcome,
    Who,
    WhoReply,
    nick_key,
    room_topic,
    sync_topic,
    validate_nick,
    validate_room,
    validate_text,
)

__all__ = ["ClientSession", "Output", "State"]

#: Lines fetched from history when joining a room (the ``--backlog`` default).
DEFAULT_BACKLOG = 50
#: Most lines asked for in one repair request.
REPAIR_CHUNK = 500
#: Broadcasts buffered for a room whose ``joined`` has not arrived yet.
PREJOIN_LIMIT = 10_000
#: Heartbeat interval used until the welcome says otherwise.
DEFAULT_HEARTBEAT = 2.0
#: Reconnect delays, in seconds, one per failed attempt, the last repeated.
BACKOFF = (0.2, 0.5, 1.0, 2.0, 4.0)
#: Times a line refused as ``rate_limited`` is sent again before it is reported.
RATE_LIMITED_RETRIES = 3


class State(Enum):
    """Where a session is in its life."""

    IDLE = "idle"
    JOINING = "joining"
    JOINED = "joined"
    RECONNECTING = "reconnecting"
    CLOSING = "closing"
    CLOSED = "closed"


_TRANSITIONS: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.JOINING, State.CLOSED}),
    State.JOINING: frozenset(
        {State.JOINED, State.IDLE, State.RECONNECTING, State.CLOSING, State.CLOSED}
    ),
    State.JOINED: frozenset({State.RECONNECTING, State.CLOSING, State.CLOSED}),
    State.RECONNECTING: frozenset({State.JOINED, State.CLOSING, State.CLOSED}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


@dataclass
class Output:
    """What the front-end must do next, in this order."""

    reset: bool = False
    connect_pub: str | None = None
    subscribe: list[tuple[bool, bytes]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)


@dataclass
class _Track:
    """Sequence tracking of one room we are in."""

    last: int
    # lines at or below this number are replayed history, not live
    history_until: int = 0
    buffered: dict[int, ChatMessage] = field(default_factory=dict)
    repairing: bool = False
    repair_since: float = 0.0
    known: int = 0  # highest sequence number known to exist
    oldest: int = 0  # lowest sequence number shown; /history fetches below it


class ClientSession:
    """One client's protocol state; see the module docstring."""

    def __init__(
        self,
        nick: str,
        rooms: list[str] | None = None,
        *,
        server: str = "tcp://127.0.0.1:5555",
        pub_override: str | None = None,
        backlog: int = DEFAULT_BACKLOG,
    ) -> None:
        self.nick = nick
        wanted = [validate_room(r) for r in (rooms or ["lobby"])]
        self.wanted_rooms: list[str] = list(dict.fromkeys(wanted))
        self.current: str | None = self.wanted_rooms[0] if self.wanted_rooms else None
        self.state = State.IDLE
        self.server = server
        self.pub_override = pub_override
        self.backlog = max(0, backlog)
        self.session_token: str | None = None
        self.broker_id: str | None = None
        #: The broker's limits from the latest welcome (a restarted broker may
        #: have other ones); None before the first welcome.
        self.limits: Limits | None = None
        self.heartbeat = DEFAULT_HEARTBEAT
        self.last_heard = 0.0
        self.members: dict[str, list[str]] = {}
        self.close_reason: str | None = None
        self._out = Output()
        self._tracks: dict[str, _Track] = {}
        self._joining: dict[str, list[Broadcast]] = {}
        self._sync = 0
        self._next_ping = 0.0
        self._welcomed = False
        self._attempt = 0
        self._retry_at = 0.0
        self._history_purpose: dict[str, deque[str]] = {}
        self._seen_notices: OrderedDict[str, None] = OrderedDict()
        self._key_prefix = secrets.token_hex(6)
        self._keys = 0
        self._unacked: OrderedDict[str, Say | SendPrivate] = OrderedDict()
        # room -> the sync number its join used, to unsubscribe once joined
        self._sync_of: dict[str, int] = {}
        # keys of lines not sent yet: typed while reconnecting or joining their room
        self._held: set[str] = set()
        # Rooms we were in and are joining again after a reconnect.
        self._rejoining: set[str] = set()
        # Lines over the broker's flood limit wait here, (when to send, key),
        # in order, instead of being refused (docs/PROTOCOL.md §6).
        self._pacer = RateLimiter()
        #: Keys of lines the broker refused as rate_limited, and how often.
        self._rate_retries: dict[str, int] = {}
        self._paced: deque[tuple[float, str]] = deque()
        self._now = 0.0
        #: How many repair requests were made (for tests and diagnostics).
        self.repairs = 0

    # --- the front-end's side --------------------------------------------

    def take_output(self) -> Output:
        """What to do now; the session forgets it once taken."""
        out, self._out = self._out, Output()
        return out

    @property
    def rooms(self) -> list[str]:
        """Rooms we are in, in joining order."""
        return list(self._tracks)

    @property
    def unacked(self) -> int:
        """Lines sent or queued that the broker has not acknowledged yet."""
        return len(self._unacked)

    @property
    def busy(self) -> bool:
        """Whether something we asked for is unfinished: a line not yet
        acknowledged (sent, paced or held) or a room still being joined.
        A front-end waits for this to clear before leaving, so that lines
        typed just before the end of input are not lost."""
        return bool(self._unacked or self._joining)

    def undelivered(self, reason: str) -> list[ev.Event]:
        """Give up on every line not acknowledged yet: one error event each
        (with the line's text and key), so none is lost silently."""
        out: list[ev.Event] = []
        for key, line in self._unacked.items():
            room = line.room if isinstance(line, Say) else None
            out.append(
                ev.Error(
                    code="not_delivered",
                    message=reason,
                    req="say" if isinstance(line, Say) else "msg",
                    room=room,
                    text=line.text,
                    key=key,
                )
            )
        self._unacked.clear()
        self._held.clear()
        self._paced.clear()
        return out

    def hello(self, now: float, nick: str | None = None) -> None:
        """Ask to join (again, after a refusal, perhaps with another nickname)."""
        if nick is not None:
            self.nick = nick
        validate_nick(self.nick)
        self._move(State.JOINING)
        self.last_heard = now
        self._send(Hello(v=PROTOCOL_VERSION, nick=self.nick, rooms=self.wanted_rooms))

    def tick(self, now: float) -> list[ev.Event]:
        """Heartbeats, liveness of the broker, reconnect attempts, paced lines."""
        self._now = now
        if self.state is State.JOINED:
            while self._paced and self._paced[0][0] <= now:
                _, key = self._paced.popleft()
                line = self._unacked.get(key)
                if line is not None:
                    self._send(line)
            if now - self.last_heard > self._dead_after:
                return self._lose_broker(now)
            for name, track in self._tracks.items():
                if track.repairing and now - track.repair_since > self._dead_after:
                    # The answer was lost (a full queue): ask again.
                    track.repairing = False
                    self._history_purpose.pop(name, None)
                    self._repair(name, track)
            if now >= self._next_ping:
                self._next_ping = now + self.heartbeat
                self._send(Ping())
        elif self.state is State.RECONNECTING and now >= self._retry_at:
            self._attempt += 1
            self._retry_at = now + max(
                BACKOFF[min(self._attempt, len(BACKOFF) - 1)], self._dead_after
            )
            self._out = Output(reset=True)
            self.last_heard = now
            self._send(
                Hello(
                    v=PROTOCOL_VERSION,
                    nick=self.nick,
                    rooms=list(self._tracks) or self.wanted_rooms,
                    resume=self.session_token,
                )
            )
        return []

    @property
    def _dead_after(self) -> float:
        return max(3 * self.heartbeat, 1.0)

    def on_reply(self, reply: Reply, now: float) -> list[ev.Event]:
        """Handle what the broker sent to us privately."""
        self.last_heard = self._now = now
        handler = _REPLY_HANDLERS.get(type(reply))
        return handler(self, reply, now) if handler is not None else []  # type: ignore[operator]

    def on_broadcast(self, message: Broadcast, now: float) -> list[ev.Event]:
        """Handle what arrived on the SUB socket."""
        room = message.room
        waiting = self._joining.get(room)
        if waiting is not None:
            if len(waiting) < PREJOIN_LIMIT:
                waiting.append(message)
            return []
        track = self._tracks.get(room)
        if track is None:
            return []  # a room we just left; the unsubscribe is on its way
        if type(message) is ChatMessage:
            return self._sequenced(room, track, message)
        me = nick_key(self.nick)
        if isinstance(message, JoinNotice):
            if nick_key(message.nick) == me:
                return []
            if message.nick in self.members.get(room, ()):
                # Already here: someone rejoining a restarted broker, not news.
                return []
            self._members_add(room, message.nick)
            return [ev.Join(room=room, nick=message.nick, ts=message.ts)]
        if isinstance(message, JoinsNotice):
            events: list[ev.Event] = []
            for nick in message.nicks:
                if nick_key(nick) == me or nick in self.members.get(room, ()):
                    continue
                self._members_add(room, nick)
                events.append(ev.Join(room=room, nick=nick, ts=message.ts))
            return events
        if isinstance(message, LeaveNotice):
            if nick_key(message.nick) == me:
                return []
            self._members_remove(room, message.nick)
            return [ev.Leave(room=room, nick=message.nick, reason=message.reason, ts=message.ts)]
        if isinstance(message, NickNotice):
            for members in self.members.values():
                _replace(members, message.old, message.new)
            if message.id in self._seen_notices or me in (
                nick_key(message.old),
                nick_key(message.new),
            ):
                return []
            self._seen_notices[message.id] = None
            if len(self._seen_notices) > 256:
                self._seen_notices.popitem(last=False)
            return [ev.Nick(old=message.old, new=message.new)]
        return []

    # --- user operations -------------------------------------------------

    def say(self, text: str, room: str | None = None, *, action: bool = False) -> str:
        """Send a line to ``room`` (default: the current room); returns its key.

        Raises ProtocolError for an invalid line or when not in that room.
        """
        validate_text(text)
        target = validate_room(room) if room is not None else self.current
        if target is None:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, "you are in no room: /join one")
        if target not in self._tracks and target not in self._joining:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {target}")
        key = self._new_key()
        return self._send_line(key, Say(room=target, text=text, action=action, key=key))

    def private(self, to: str, text: str, *, action: bool = False) -> str:
        """Send a private line to ``to``; returns its key.

        Raises ProtocolError for an invalid line or nickname.
        """
        validate_nick(to)
        validate_text(text)
        key = self._new_key()
        return self._send_line(key, SendPrivate(to=to, text=text, action=action, key=key))

    def join(self, room: str) -> str:
        """Join ``room`` (and make it current once joined); returns its canonical name."""
        name = validate_room(room)
        if name in self._tracks:
            self.current = name
            return name
        self._require_joined()
        # Switch at once, so a line typed right after /join goes there; it is
        # held until the broker confirms the join.
        self.current = name
        if name in self._joining:
            return name
        self._sync += 1
        self._joining[name] = []
        self._sync_of[name] = self._sync
        self._out.subscribe.append((True, room_topic(name)))
        self._subscribe_sync(self._sync)
        self._send(Join(room=name, sync=self._sync))
        return name

    def part(self, room: str | None = None) -> str:
        """Leave ``room`` (default: the current one); returns its name."""
        name = validate_room(room) if room is not None else self.current
        if name is None or name not in self._tracks:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {name or 'any room'}")
        self._require_joined()
        self._send(Part(room=name))
        return name

    def rename(self, nick: str) -> None:
        """Ask to change nickname (the answer is a ``nick`` or ``error`` event)."""
        validate_nick(nick)
        if nick == self.nick:  # a change of case only is a real rename
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"you are already called {nick}")
        self._require_joined()
        self._send(Rename(nick=nick))

    def who(self, room: str | None = None) -> None:
        """Ask who is in ``room`` (default: the current one)."""
        name = validate_room(room) if room is not None else self.current
        if name is None:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, "you are in no room: name one")
        self._require_joined()
        self._send(Who(room=name))

    def list_rooms(self) -> None:
        """Ask for the rooms that have members."""
        self._require_joined()
        self._send(ListRooms())

    def fetch_history(self, count: int, room: str | None = None) -> None:
        """Ask for ``count`` lines older than the oldest we have seen of ``room``."""
        name = validate_room(room) if room is not None else self.current
        if name is None or name not in self._tracks:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {name or 'any room'}")
        self._require_joined()
        track = self._tracks[name]
        self._ask_history(name, "older", History(room=name, before=track.oldest, limit=count))

    def leave(self) -> None:
        """Say goodbye; the session closes when the broker answers."""
        if self.state in (State.JOINED, State.RECONNECTING, State.JOINING):
            self._move(State.CLOSING)
            self._send(Bye())
        elif self.state is State.IDLE:
            self._move(State.CLOSED)

    def closed_by_front_end(self, reason: str) -> None:
        """The front-end gave up (e.g. no goodbye in time): mark the session closed."""
        if self.state is not State.CLOSED:
            self.close_reason = reason
            self.state = State.CLOSED

    # --- replies ---------------------------------------------------------

    def _on_welcome(self, reply: Welcome, now: float) -> list[ev.Event]:
        self.session_token = reply.session
        self.broker_id = reply.broker
        self.limits = reply.limits
        self._pacer.configure(reply.limits.rate, reply.limits.burst)
        self.heartbeat = reply.heartbeat
        self.nick = reply.nick
        self._next_ping = now + self.heartbeat
        self._out.connect_pub = self.pub_override or _reachable(reply.pub, self.server)
        rooms = list(self._tracks) or self.wanted_rooms
        if self.state is State.RECONNECTING:
            self._rejoining = {name for name in rooms if name in self._tracks}
        for name in rooms:
            self._out.subscribe.append((True, room_topic(name)))
            if name not in self._tracks:
                self._joining.setdefault(name, [])
        self._subscribe_sync(0)
        return []

    def _on_joined(self, reply: Joined, now: float) -> list[ev.Event]:
        name = reply.room
        if name in self._rejoining:
            # Back in a room we were in: keep whom we knew, so those who come
            # back to a restarted broker after us are not announced as new.
            known = self.members.get(name, [])
            self.members[name] = known + [m for m in reply.members if m not in known]
        else:
            self.members[name] = list(reply.members)
        waiting = self._joining.pop(name, [])
        out: list[ev.Event] = []
        track = self._tracks.get(name)
        if track is None or reply.seq < track.last:
            # New to us, or a broker that lost its history: start afresh.
            start = max(0, reply.seq - self.backlog)
            track = self._tracks[name] = _Track(
                last=start, history_until=reply.seq, known=reply.seq, oldest=start + 1
            )
        else:
            track.known = max(track.known, reply.seq)
        self._repair(name, track)
        if self.session_token is not None:
            # Unsubscribing the sync topic keeps the broker's subscription table small.
            number = self._sync_of.pop(name, 0)
            self._out.subscribe.append((False, sync_topic(self.session_token, number)))
        if self.state is State.JOINING and not self._welcomed:
            self._welcomed = True
            self._move(State.JOINED)
            out.append(
                ev.Welcome(nick=self.nick, room=name, rooms=self.rooms, members=reply.members)
            )
        elif self.state is State.RECONNECTING:
            self._rejoining.discard(name)
            out += self._maybe_reconnected()
        elif self.state is State.JOINED:
            out.append(ev.Joined(room=name, members=list(reply.members)))
        if self._held and self.state is State.JOINED:
            for key, line in self._unacked.items():
                if key in self._held and isinstance(line, Say) and line.room == name:
                    self._held.discard(key)
                    self._transmit(key)
        for message in waiting:
            out += self.on_broadcast(message, now)
        return out

    def _maybe_reconnected(self) -> list[ev.Event]:
        """Back in every room (or refused the ones we could not rejoin)."""
        if self.state is not State.RECONNECTING or self._joining or self._rejoining:
            return []
        self._move(State.JOINED)
        self._attempt = 0
        self._held.clear()
        self._paced.clear()
        for key in self._unacked:
            self._transmit(key)  # the broker drops any it already has, by key
        return [ev.Connection(state="reconnected")]

    def _on_parted(self, reply: Parted, now: float) -> list[ev.Event]:
        self._tracks.pop(reply.room, None)
        self.members.pop(reply.room, None)
        self._out.subscribe.append((False, room_topic(reply.room)))
        if self.current == reply.room:
            self.current = self.rooms[-1] if self._tracks else None
        return [ev.Parted(room=reply.room)]

    def _on_renamed(self, reply: Renamed, now: float) -> list[ev.Event]:
        self.nick = reply.new
        return [ev.Nick(old=reply.old, new=reply.new)]

    def _on_who(self, reply: WhoReply, now: float) -> list[ev.Event]:
        if reply.room in self._tracks:
            self.members[reply.room] = list(reply.members)
        return [ev.Who(room=reply.room, members=list(reply.members))]

    def _on_rooms(self, reply: RoomList, now: float) -> list[ev.Event]:
        return [ev.Rooms(rooms=[ev.RoomCount(room=r.room, members=r.members) for r in reply.rooms])]

    def _on_private(self, reply: PrivateMessage, now: float) -> list[ev.Event]:
        return [
            ev.Private(
                nick=reply.nick,
                to=reply.to,
                text=reply.text,
                ts=reply.ts,
                id=reply.id,
                action=reply.action,
            )
        ]

    def _on_ack(self, reply: Ack, now: float) -> list[ev.Event]:
        self._unacked.pop(reply.key, None)
        if self._rate_retries:
            self._rate_retries.pop(reply.key, None)
        return []

    def _on_pong(self, reply: Pong, now: float) -> list[ev.Event]:
        if self.broker_id is not None and reply.broker != self.broker_id:
            return self._lose_broker(now)
        for name, seq in reply.seqs.items():
            track = self._tracks.get(name)
            if track is not None and seq > track.known:
                track.known = seq
                self._repair(name, track)
        return []

    def _on_history(self, reply: HistoryReply, now: float) -> list[ev.Event]:
        name = reply.room
        purposes = self._history_purpose.get(name)
        purpose = purposes.popleft() if purposes else "repair"
        track = self._tracks.get(name)
        if track is None:
            return []
        if purpose == "older":
            lines: list[ev.Event] = [_as_event(m, history=True) for m in reply.messages]
            if reply.messages:
                track.oldest = reply.messages[0].seq
            # A marker, so a reader knows the fetch is over (and an empty one
            # is not mistaken for a lost answer).
            return [*lines, ev.HistoryEnd(room=name, count=len(reply.messages))]
        track.repairing = False
        track.known = max(track.known, reply.seq)
        out: list[ev.Event] = []
        if reply.missed:
            out.append(ev.Missed(room=name, count=reply.missed))
        for line in reply.messages:
            if line.seq <= track.last:
                continue
            track.last = line.seq
            out.append(_as_event(line, history=line.seq <= track.history_until))
        if not reply.messages and reply.missed:
            # The whole range is gone: skip past it.
            track.last = max(track.last, min(track.known, track.last + reply.missed))
        out += self._drain(name, track)
        return out

    def _on_error(self, reply: Error, now: float) -> list[ev.Event]:
        if reply.code == ErrorCode.NOT_JOINED and self.state in (
            State.JOINED,
            State.RECONNECTING,
        ):
            # The broker does not know this connection (it restarted, or our
            # connection was re-made): keep every unacknowledged line and rejoin;
            # the lines are resent after the rejoin.
            return self._lose_broker(now) if self.state is State.JOINED else []
        failed = self._unacked.pop(reply.key, None) if reply.key else None
        if reply.code == ErrorCode.RATE_LIMITED and failed is not None and reply.key:
            tries = self._rate_retries.get(reply.key, 0)
            if tries < RATE_LIMITED_RETRIES:
                # The broker's bucket was emptier than our mirror of it (another
                # clock, a restarted broker, a lower limit): not the line's
                # fault. Slow down and send it again in turn; report it only if
                # the broker keeps refusing it.
                self._rate_retries[reply.key] = tries + 1
                self._unacked[reply.key] = failed
                self._pacer.penalize(now)
                self._transmit(reply.key)
                return []
        if reply.key:
            self._rate_retries.pop(reply.key, None)
        undeliverable: list[Say] = []
        if reply.req == "history" and reply.room:
            purposes = self._history_purpose.get(reply.room)
            purpose = purposes.popleft() if purposes else None
            track = self._tracks.get(reply.room)
            if track is not None:
                if purpose == "repair" and reply.code == ErrorCode.RATE_LIMITED:
                    # Our own repair was throttled (many rooms at once): leave it
                    # marked in progress, so tick() asks again a little later.
                    track.repair_since = now
                    return []
                track.repairing = False
        if reply.req == "join" and reply.room:
            self._joining.pop(reply.room, None)
            if reply.room in self._rejoining:
                self._rejoining.discard(reply.room)
                self._tracks.pop(reply.room, None)  # the restarted broker refused it
            self._out.subscribe.append((False, room_topic(reply.room)))
            if self.current == reply.room:
                self.current = self.rooms[-1] if self._tracks else None
            undeliverable = self._drop_held(reply.room)
        if reply.req == "hello":
            if self.state is State.JOINING:
                self._joining.clear()
                self._move(State.IDLE)
            elif self.state is State.RECONNECTING:
                self.close_reason = reply.code
                self._move(State.CLOSED)
        text = failed.text if failed is not None else None
        out: list[ev.Event] = [
            ev.Error(
                code=reply.code,
                message=reply.message,
                req=reply.req,
                room=reply.room,
                text=text,
                key=reply.key if failed is not None else None,
            )
        ]
        for line in undeliverable:
            out.append(
                ev.Error(
                    code=reply.code,
                    message=f"not delivered: you could not join {line.room}",
                    req="say",
                    room=line.room,
                    text=line.text,
                    key=line.key,
                )
            )
        if reply.req == "join":
            out += self._maybe_reconnected()
        return out

    def _on_shutdown(self, reply: Shutdown, now: float) -> list[ev.Event]:
        if self.state in (State.CLOSING, State.CLOSED):
            return []
        # Stay ready to reconnect: a restarted broker will take us back.
        out: list[ev.Event] = [ev.Shutdown(reason=reply.reason)]
        if self.state is State.JOINED:
            out += self._lose_broker(now)
        return out

    def _on_goodbye(self, reply: Goodbye, now: float) -> list[ev.Event]:
        if self.state is not State.CLOSED:
            self.close_reason = "exit"
            self._move(State.CLOSED)
        return []

    # --- helpers ---------------------------------------------------------

    def _move(self, new: State) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise ProtocolError(
                ErrorCode.NOT_JOINED, f"cannot go from {self.state.value} to {new.value}"
            )
        self.state = new

    def _send(self, request: Request) -> None:
        self._out.requests.append(request)

    def _subscribe_sync(self, number: int) -> None:
        if self.session_token is not None:
            self._out.subscribe.append((True, sync_topic(self.session_token, number)))

    def _drop_held(self, room: str) -> list[Say]:
        dropped: list[Say] = []
        for key in [k for k in self._held if getattr(self._unacked.get(k), "room", None) == room]:
            self._held.discard(key)
            line = self._unacked.pop(key)
            assert isinstance(line, Say)
            dropped.append(line)
        return dropped

    def _require_joined(self) -> None:
        if self.state is State.RECONNECTING:
            raise ProtocolError(
                ErrorCode.NOT_JOINED,
                "not connected to the broker right now (reconnecting); try again once reconnected",
            )
        if self.state is not State.JOINED:
            raise ProtocolError(ErrorCode.NOT_JOINED, f"not in the chat ({self.state.value})")

    def _new_key(self) -> str:
        self._keys += 1
        return f"{self._key_prefix}-{self._keys}"

    def _send_line(self, key: str, line: Say | SendPrivate) -> str:
        self._unacked[key] = line
        if self.state is State.JOINED and (
            isinstance(line, SendPrivate) or line.room in self._tracks
        ):
            self._transmit(key)
        else:
            self._held.add(key)  # sent in order once we are back, or in that room
        return key

    def _transmit(self, key: str) -> None:
        """Send a line now, or pace it after the ones already waiting."""
        wait = self._pacer.reserve(self._now)
        if wait <= 0 and not self._paced:
            self._send(self._unacked[key])
            return
        after = self._paced[-1][0] if self._paced else self._now
        self._paced.append((max(after, self._now + wait), key))

    def _lose_broker(self, now: float) -> list[ev.Event]:
        self._move(State.RECONNECTING)
        self._retry_at = now
        self._attempt = 0
        for purposes in self._history_purpose.values():
            purposes.clear()
        for track in self._tracks.values():
            track.repairing = False
        self._joining.clear()
        return [ev.Connection(state="reconnecting")]

    def _ask_history(self, room: str, purpose: str, request: History) -> None:
        self._history_purpose.setdefault(room, deque()).append(purpose)
        self._send(request)

    def _repair(self, name: str, track: _Track) -> None:
        if track.repairing:
            return
        gap_end = min(track.buffered) if track.buffered else track.known + 1
        if gap_end <= track.last + 1:
            return
        before = min(gap_end, track.last + 1 + REPAIR_CHUNK)
        track.repairing = True
        track.repair_since = self._now
        self.repairs += 1
        self._ask_history(
            name, "repair", History(room=name, after=track.last, before=before, limit=REPAIR_CHUNK)
        )

    def _sequenced(self, name: str, track: _Track, line: ChatMessage) -> list[ev.Event]:
        if line.seq <= track.last:
            return []  # already delivered
        if line.seq == track.last + 1 and not track.repairing:
            track.last = line.seq
            track.known = max(track.known, line.seq)
            out: list[ev.Event] = [_as_event(line, history=False)]
            if track.buffered:
                out += self._drain(name, track)
            return out
        track.buffered[line.seq] = line
        track.known = max(track.known, line.seq)
        self._repair(name, track)
        return []

    def _drain(self, name: str, track: _Track) -> list[ev.Event]:
        out: list[ev.Event] = []
        while True:
            line = track.buffered.pop(track.last + 1, None)
            if line is None:
                break
            track.last = line.seq
            out.append(_as_event(line, history=line.seq <= track.history_until))
        for seq in [s for s in track.buffered if s <= track.last]:
            del track.buffered[seq]
        self._repair(name, track)
        return out

    def _members_add(self, room: str, nick: str) -> None:
        members = self.members.setdefault(room, [])
        if nick not in members:
            members.append(nick)

    def _members_remove(self, room: str, nick: str) -> None:
        members = self.members.get(room)
        if members and nick in members:
            members.remove(nick)


def _replace(members: list[str], old: str, new: str) -> None:
    for i, member in enumerate(members):
        if member == old:
            members[i] = new


def _as_event(line: ChatMessage, *, history: bool) -> ev.Message:
    return ev.Message(
        room=line.room,
        nick=line.nick,
        text=line.text,
        ts=line.ts,
        id=line.id,
        seq=line.seq,
        action=line.action,
        history=history,
    )


def _reachable(pub: str, server: str) -> str:
    """The PUB endpoint from a welcome, with a wildcard host (``*``, ``0.0.0.0``)
    replaced by the host we reached the router on."""
    parts = urlsplit(pub)
    try:
        port = parts.port
    except ValueError:  # not a port at all: the front-end reports the endpoint
        return pub
    if parts.scheme != "tcp" or parts.hostname not in ("*", "0.0.0.0", "::", None):
        return pub
    host = urlsplit(server).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"tcp://{host}:{port}"


_REPLY_HANDLERS = {
    Welcome: ClientSession._on_welcome,
    Joined: ClientSession._on_joined,
    Parted: ClientSession._on_parted,
    Renamed: ClientSession._on_renamed,
    WhoReply: ClientSession._on_who,
    RoomList: ClientSession._on_rooms,
    PrivateMessage: ClientSession._on_private,
    Ack: ClientSession._on_ack,
    Pong: ClientSession._on_pong,
    HistoryReply: ClientSession._on_history,
    Error: ClientSession._on_error,
    Shutdown: ClientSession._on_shutdown,
    Goodbye: ClientSession._on_goodbye,
}
