"""The client's session core, with no sockets: shared by ``Client``,
``AsyncClient``, the CLI and bots (docs/PROTOCOL.md §5).

The front-end feeds it what arrives (:meth:`ClientSession.on_reply`,
:meth:`ClientSession.on_broadcast`) and the time (:meth:`ClientSession.tick`),
calls user operations (:meth:`say`, :meth:`join`...), and after each call
carries out :meth:`take_output`: reset the sockets, connect the SUB, change
subscriptions, send requests, in that order. A request the socket could not
take goes back through :meth:`not_sent`.

It is a composition of small state machines, each with its own module:

* :class:`client.outbox.Outbox`: lines until acknowledged or reported, their
  keys, pacing to the broker's bucket, resends on a timer;
* :class:`client.sequencer.RoomTrack`: one per room, each line once and in
  order, gap repair with a deadline and retries (the Clone pattern);
* :class:`client.requests.RequestTracker`: every request answered or failed;
* :class:`client.joins.Joins`: rooms being joined, their broadcasts held
  until their ``joined``;
* :class:`client.reconnect.Retry`: when to say ``hello`` again;
* :class:`client.membership.Membership`: who is in our rooms;
* :class:`client.presence.Presence`: room topics and who is away.

The session's own states and the moves between them (``_TRANSITIONS``)::

    idle --hello--> joining --joined--> joined --bye--> closing --goodbye--> closed
      ^                |                  |
      +----refused-----+                  +--silence, not_joined, shutdown--> reconnecting
                                                                                |
                       joined <------------every room joined again--------------+

While reconnecting, ``hello`` is retried with jittered backoff on the same
connection (a fresh one only for the first try), and every room's broadcasts
are held until its ``joined``, as on a first join, so a rejoin never delivers
a line twice or out of order.

With several broker endpoints (:class:`client.failover.Endpoints`, brokers of
one cluster), every try goes to the next endpoint on a fresh connection and
resumes the session there with its token; a first ``hello`` unanswered for
:data:`client.failover.CONNECT_TRY` seconds moves on too.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import urlsplit

from client import events as ev
from client.failover import CONNECT_TRY, Endpoints
from client.joins import Joins
from client.membership import Membership
from client.outbox import NOT_SENT_RETRY, LineState, Outbox
from client.presence import Presence
from client.reconnect import Retry
from client.requests import REQUEST_TIMEOUT, Purpose, RequestTracker, Tracked
from client.sequencer import RoomTrack, as_event
from protocol import (
    PROTOCOL_VERSION,
    Ack,
    Away,
    AwayNotice,
    AwayReply,
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
    Topic,
    TopicNotice,
    TopicReply,
    Welcome,
    Who,
    WhoReply,
    nick_key,
    room_topic,
    sync_topic,
    validate_away,
    validate_nick,
    validate_room,
    validate_text,
    validate_topic,
)

__all__ = ["ClientSession", "Output", "State"]

#: Lines fetched from history when joining a room (the ``--backlog`` default).
DEFAULT_BACKLOG = 50
#: Heartbeat interval used until the welcome says otherwise.
DEFAULT_HEARTBEAT = 2.0
#: Resend delay of a line the broker could not store (``unavailable``).
UNAVAILABLE_RETRY = 1.0
#: Resend delay of a request refused as ``syncing`` (our join is completing).
SYNCING_RETRY = 0.5


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


class ClientSession:
    """One client's protocol state; see the module docstring."""

    def __init__(
        self,
        nick: str,
        rooms: list[str] | None = None,
        *,
        server: str | Sequence[str] = "tcp://127.0.0.1:5555",
        pub_override: str | None = None,
        backlog: int = DEFAULT_BACKLOG,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.nick = nick
        wanted = [validate_room(r) for r in (rooms or ["lobby"])]
        self.wanted_rooms: list[str] = list(dict.fromkeys(wanted))
        self.current: str | None = self.wanted_rooms[0] if self.wanted_rooms else None
        self.state = State.IDLE
        #: The brokers' ROUTER endpoints; raises ProtocolError (bad_endpoint).
        self.endpoints = Endpoints(server)
        self.pub_override = pub_override
        self.backlog = max(0, backlog)
        self.session_token: str | None = None
        self.broker_id: str | None = None
        #: The broker's limits from the latest welcome (a restarted broker may
        #: have other ones); None before the first welcome.
        self.limits: Limits | None = None
        self.heartbeat = DEFAULT_HEARTBEAT
        self.broker_timeout = 10.0
        self.last_heard = 0.0
        self.close_reason: str | None = None
        self.outbox = Outbox()
        self.requests = RequestTracker()
        self.membership = Membership()
        #: Topics of our rooms and who is away (docs/PROTOCOL.md "Room topics", "Away").
        self.presence = Presence()
        #: Id of the request the latest operation made (see :meth:`take_completions`).
        self.last_request: int | None = None
        self.retry = Retry(jitter)
        self.joins = Joins()
        self._out = Output()
        self._tracks: dict[str, RoomTrack] = {}
        self._next_ping = 0.0
        self._welcomed = False
        self._restarted = False
        self._now = 0.0
        # When the sockets were last made anew while reconnecting: a session
        # holding our nickname on the old ones expires within the broker's
        # timeout from then on.
        self._reset_at = 0.0
        self._told_nick_wait = False
        self._hello_at = 0.0

    @property
    def server(self) -> str:
        """The ROUTER endpoint in use (the front-end connects its DEALER there
        at every reset)."""
        return self.endpoints.current

    # --- the front-end's side --------------------------------------------

    def take_output(self) -> Output:
        """What to do now; the session forgets it once taken."""
        out, self._out = self._out, Output()
        return out

    def advance(self, now: float) -> None:
        """The time is ``now``: the front-end says so before a user operation,
        so that pacing counts from the real moment, not the last tick."""
        self._now = max(self._now, now)

    def take_completions(self) -> list[tuple[int, ev.Event]]:
        """Answers to user requests (join, part, nick, who, rooms, history) as
        (the id in :attr:`last_request` after the call, the event that answered
        it: its reply's event or an ``error``), each once."""
        return self.requests.take_completions()

    def not_sent(self, requests: list[Request], now: float) -> None:
        """The socket could not take ``requests`` (a full send queue; the
        first refused and the ones after it, in order): lines go again first,
        in the same order, with their keys; other requests a moment later."""
        self.outbox.not_sent(requests)
        for request in requests:
            if isinstance(request, Join | Part | Rename | Who | ListRooms | History | Topic | Away):
                self.requests.not_sent(request, now + NOT_SENT_RETRY)

    @property
    def rooms(self) -> list[str]:
        """Rooms we are in, in joining order."""
        return list(self._tracks)

    @property
    def members(self) -> dict[str, list[str]]:
        """Room -> its members as we know them."""
        return self.membership.members

    @property
    def unacked(self) -> int:
        """Lines sent or queued that the broker has not acknowledged yet."""
        return len(self.outbox)

    @property
    def queued(self) -> int:
        """Lines not on the wire yet: waiting for a token, for a room's join or
        for the reconnect."""
        return self.outbox.count(LineState.QUEUED) + self.outbox.count(LineState.HELD)

    @property
    def repairs(self) -> int:
        """How many repair requests were made (for tests and diagnostics)."""
        return sum(track.repairs for track in self._tracks.values())

    @property
    def busy(self) -> bool:
        """Whether something we asked for is unfinished: a line not yet
        acknowledged (sent, paced or held), a request unanswered or a room
        still being joined. A front-end waits for this to clear before leaving,
        so that lines typed just before the end of input are not lost."""
        return bool(len(self.outbox) or self.joins or self.requests.busy())

    def track(self, room: str) -> RoomTrack | None:
        """The sequencer of ``room`` (tests and diagnostics)."""
        return self._tracks.get(room)

    def undelivered(self, reason: str) -> list[ev.Event]:
        """Give up on every line not acknowledged yet and every request not
        answered: one error event each (lines with their text and key), so
        none is lost silently."""
        return self.outbox.give_up(reason) + self.requests.give_up(reason)

    def hello(self, now: float, nick: str | None = None) -> None:
        """Ask to join (again, after a refusal, perhaps with another nickname)."""
        if nick is not None:
            self.nick = nick
        validate_nick(self.nick)
        self._move(State.JOINING)
        self.last_heard = self._now = self._hello_at = now
        self._send(Hello(v=PROTOCOL_VERSION, nick=self.nick, rooms=self.wanted_rooms))

    def tick(self, now: float) -> list[ev.Event]:
        """Heartbeats, liveness of the broker, repairs, resends, paced lines,
        reconnect attempts."""
        self._now = now
        out: list[ev.Event] = []
        if self.state is State.JOINED:
            if now - self.last_heard > self._dead_after:
                return self._lose_broker(now)
            for name in list(self._tracks):
                out += self._poll_repair(name, now)
            out += self.requests.expired(now)
            self._resend_requests(now)
            self._flush_outbox(now)
            if now >= self._next_ping:
                self._next_ping = now + self.heartbeat
                self._send(Ping())
        elif self.state is State.JOINING and self._first_try_over(now):
            # That broker is down (or far): the first hello goes to the next.
            self.endpoints.advance()
            self._out = Output(reset=True)
            self._hello_at = now
            self._send(Hello(v=PROTOCOL_VERSION, nick=self.nick, rooms=self.wanted_rooms))
        elif self.state is State.RECONNECTING and (attempt := self.retry.due(now)):
            if len(self.endpoints) > 1:
                # Another broker of the cluster resumes the session (§5.3): a
                # fresh connection to the next endpoint for every try (a
                # session a try left behind holding our nickname expires
                # within the timeout from the latest one).
                self.endpoints.advance()
                self._out = Output(reset=True)
                self._reset_at = now
            elif attempt == 1:
                # A fresh SUB (it keeps its subscriptions) and DEALER (the
                # broker may know the old routing id no more). Later tries
                # reuse them: a hello the broker got and answered late must
                # not leave a session holding our nickname.
                self._out = Output(reset=True)
                self._reset_at = now
            self._send(
                Hello(
                    v=PROTOCOL_VERSION,
                    nick=self.nick,
                    rooms=self._hello_rooms(),
                    resume=self.session_token,
                )
            )
        return out

    def _first_try_over(self, now: float) -> bool:
        return (
            len(self.endpoints) > 1
            and self.session_token is None  # no welcome yet
            and now - self._hello_at >= CONNECT_TRY
        )

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
        if self.joins.hold(message):
            return []
        room = message.room
        track = self._tracks.get(room)
        if track is None:
            return []  # a room we just left; the unsubscribe is on its way
        if type(message) is ChatMessage:
            out = track.line(message)
            return out + self._poll_repair(room, now)
        if isinstance(message, TopicNotice | AwayNotice):
            events = self.presence.on_notice(message, self.nick)
            if isinstance(message, TopicNotice) and nick_key(message.nick) == nick_key(self.nick):
                # Setting a topic has no reply: our own broadcast answers it.
                pending = self.requests.answered("topic", room, setting=True)
                if pending is not None and events:
                    self.requests.complete(pending, events[0])
            return events
        if isinstance(message, NickNotice):
            self.presence.renamed(message.old, message.new)
        return self.membership.notice(message, self.nick)

    # --- user operations -------------------------------------------------

    def say(self, text: str, room: str | None = None, *, action: bool = False) -> str:
        """Send a line to ``room`` (default: the current room); returns its key.

        Raises ProtocolError for an invalid line or when not in that room.
        """
        validate_text(text)
        target = validate_room(room) if room is not None else self.current
        if target is None:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, "you are in no room: /join one")
        if target not in self._tracks and target not in self.joins:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {target}")
        key = self.outbox.new_key()
        ready = self.state is State.JOINED and target in self._tracks
        self.outbox.add(Say(room=target, text=text, action=action, key=key), ready=ready)
        self._flush_outbox(self._now)
        return key

    def private(self, to: str, text: str, *, action: bool = False) -> str:
        """Send a private line to ``to``; returns its key.

        Raises ProtocolError for an invalid line or nickname.
        """
        validate_nick(to)
        validate_text(text)
        key = self.outbox.new_key()
        line = SendPrivate(to=to, text=text, action=action, key=key)
        self.outbox.add(line, ready=self.state is State.JOINED)
        self._flush_outbox(self._now)
        return key

    def join(self, room: str) -> str:
        """Join ``room`` (and make it current once joined); returns its canonical name.

        :attr:`last_request` names the request (None: already in the room)."""
        name = validate_room(room)
        self.last_request = None
        if name in self._tracks:
            self.current = name
            return name
        self._require_joined()
        # Switch at once, so a line typed right after /join goes there; it is
        # held until the broker confirms the join.
        self.current = name
        sync = self.joins.begin(name)
        if sync is None:
            return name
        self._out.subscribe.append((True, room_topic(name)))
        self._subscribe_sync(sync)
        self._paced(Join(room=name, sync=sync))
        return name

    def part(self, room: str | None = None) -> str:
        """Leave ``room`` (default: the current one); returns its name."""
        name = validate_room(room) if room is not None else self.current
        if name is None or name not in self._tracks:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {name or 'any room'}")
        self._require_joined()
        self._paced(Part(room=name))
        return name

    def rename(self, nick: str) -> None:
        """Ask to change nickname (the answer is a ``nick`` or ``error`` event)."""
        validate_nick(nick)
        if nick == self.nick:  # a change of case only is a real rename
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"you are already called {nick}")
        self._require_joined()
        self._paced(Rename(nick=nick))

    def who(self, room: str | None = None) -> None:
        """Ask who is in ``room`` (default: the current one)."""
        name = validate_room(room) if room is not None else self.current
        if name is None:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, "you are in no room: name one")
        self._require_joined()
        self._tracked(Who(room=name))

    def list_rooms(self) -> None:
        """Ask for the rooms that have members."""
        self._require_joined()
        self._tracked(ListRooms())

    def fetch_history(self, count: int, room: str | None = None) -> None:
        """Ask for ``count`` lines older than the oldest we have seen of ``room``."""
        name = validate_room(room) if room is not None else self.current
        if name is None or name not in self._tracks:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {name or 'any room'}")
        self._require_joined()
        track = self._tracks[name]
        self._tracked(History(room=name, before=track.oldest, limit=count))

    def topic(self, text: str | None = None, room: str | None = None) -> None:
        """Ask for the topic of ``room`` (default: the current one), or set
        it to ``text`` ("" clears it); a ``topic`` event follows."""
        name = validate_room(room) if room is not None else self.current
        if name is None:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, "you are in no room: name one")
        if text is not None:
            text = validate_topic(text)
            if name not in self._tracks:
                raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {name}")
        self._require_joined()
        self._tracked(Topic(room=name, text=text))

    def away(self, text: str = "") -> None:
        """Mark us away with ``text`` as the reason, or back with ""."""
        text = validate_away(text)
        self._require_joined()
        self._tracked(Away(text=text))

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
        if self.state is State.JOINED:
            return []  # a late answer to a retried hello; we are in already
        if self.broker_id is not None and reply.broker != self.broker_id:
            self._restarted = True
        self.session_token = reply.session
        self.broker_id = reply.broker
        self.limits = reply.limits
        self.outbox.bucket.configure(reply.limits.rate, reply.limits.burst)
        self.heartbeat = reply.heartbeat
        self.broker_timeout = reply.timeout
        self.outbox.resend_after = max(2 * self.heartbeat, 1.0)
        self.requests.timeout = max(REQUEST_TIMEOUT, reply.timeout + self._dead_after)
        self.nick = reply.nick
        self._next_ping = now + self.heartbeat
        self._out.connect_pub = self.pub_override or _reachable(reply.pub, self.server)
        rooms = self._hello_rooms()
        if self.state is State.RECONNECTING:
            # The joins come at the sync; if they never do, start over.
            self.retry.welcomed(now, self.broker_timeout + self._dead_after)
        # Held until joined, for a room we were in as for a new one: a
        # broadcast can overtake the joined (issue 12, item 1).
        self.joins.expect(rooms, again={name for name in rooms if name in self._tracks})
        for name in rooms:
            self._out.subscribe.append((True, room_topic(name)))
        self._subscribe_sync(0)
        return []

    def _on_joined(self, reply: Joined, now: float) -> list[ev.Event]:
        name = reply.room
        waiting, again, sync = self.joins.done(name)
        self.membership.joined(name, list(reply.members), again=again)
        self.presence.joined(reply)
        out: list[ev.Event] = []
        track = self._tracks.get(name)
        if track is None:
            start = max(0, reply.seq - self.backlog)
            track = self._tracks[name] = RoomTrack(
                room=name,
                last=start,
                history_until=reply.seq,
                known=reply.seq,
                oldest=start + 1,
                epoch=reply.epoch,
            )
        elif self._renumbered(track, reply.epoch, reply.seq):
            out += track.renumbered(reply.seq, reply.epoch, reply.seq)
        else:
            track.epoch = track.epoch or reply.epoch
            track.seen_known(reply.seq)  # a lower seq is reordering, never a reset
        if self.session_token is not None and sync is not None:
            # Unsubscribing the sync topic keeps the broker's subscription table small.
            self._out.subscribe.append((False, sync_topic(self.session_token, sync)))
        pending = self.requests.answered("join", name)
        if self.state is State.JOINING and not self._welcomed:
            self._welcomed = True
            self._move(State.JOINED)
            out.append(
                ev.Welcome(
                    nick=self.nick,
                    room=name,
                    rooms=self.rooms,
                    members=reply.members,
                    topic=reply.topic,
                )
            )
        elif self.state is State.RECONNECTING:
            if not again:
                joined = ev.Joined(room=name, members=list(reply.members), topic=reply.topic)
                self.requests.complete(pending, joined)
                out.append(joined)
        elif self.state is State.JOINED:
            joined = ev.Joined(room=name, members=list(reply.members), topic=reply.topic)
            self.requests.complete(pending, joined)
            out.append(joined)
        for message in waiting:
            out += self.on_broadcast(message, now)
        out += self._maybe_reconnected(now)
        out += self._poll_repair(name, now)
        if self.state is State.JOINED:
            self.outbox.release({name})
            self._flush_outbox(now)
        return out

    def _maybe_reconnected(self, now: float) -> list[ev.Event]:
        """Back in every room (or refused the ones we could not rejoin)."""
        if self.state is not State.RECONNECTING or self.joins:
            return []
        self._move(State.JOINED)
        # The broker drops any line it already has, by key (§5.5).
        self.outbox.release(set(self._tracks))
        self._resend_requests(now)
        self._flush_outbox(now)
        # A restarted broker forgot our away message: set it again, unless
        # the user's own /away or /back is being resent anyway.
        away = "" if self.requests.waiting("away") else self.presence.restore()
        if away:
            request = Away(text=away)
            self.requests.add(request, now, Purpose.RESTORE)
            self._send(request)
        restarted, self._restarted = self._restarted, False
        out: list[ev.Event] = [
            ev.Connection(state="reconnected", restarted=restarted, endpoint=self._named())
        ]
        for name in list(self._tracks):
            out += self._poll_repair(name, now)  # what was missed meanwhile
        return out

    def _on_parted(self, reply: Parted, now: float) -> list[ev.Event]:
        self._tracks.pop(reply.room, None)
        self.membership.left(reply.room)
        self.presence.parted(reply.room)
        self._out.subscribe.append((False, room_topic(reply.room)))
        if self.current == reply.room:
            self.current = self.rooms[-1] if self._tracks else None
        event = ev.Parted(room=reply.room)
        self.requests.complete(self.requests.answered("part", reply.room), event)
        return [event]

    def _on_renamed(self, reply: Renamed, now: float) -> list[ev.Event]:
        self.nick = reply.new
        event = ev.Nick(old=reply.old, new=reply.new)
        self.requests.complete(self.requests.answered("nick", None), event)
        return [event]

    def _on_who(self, reply: WhoReply, now: float) -> list[ev.Event]:
        if reply.room in self._tracks:
            self.membership.who(reply.room, list(reply.members))
        self.presence.who(reply.members, reply.away)
        event = ev.Who(room=reply.room, members=list(reply.members), away=dict(reply.away))
        self.requests.complete(self.requests.answered("who", reply.room), event)
        return [event]

    def _on_rooms(self, reply: RoomList, now: float) -> list[ev.Event]:
        event = ev.Rooms(rooms=[ev.RoomCount(room=r.room, members=r.members) for r in reply.rooms])
        self.requests.complete(self.requests.answered("rooms", None), event)
        return [event]

    def _on_topic(self, reply: TopicReply, now: float) -> list[ev.Event]:
        events = self.presence.on_topic_reply(reply)
        self.requests.complete(
            self.requests.answered("topic", reply.room, setting=False), events[0]
        )
        return events

    def _on_away(self, reply: AwayReply, now: float) -> list[ev.Event]:
        own = nick_key(reply.nick) == nick_key(self.nick)
        events = self.presence.on_away_reply(reply, self.nick)
        if own:  # else: someone we wrote to is away, no answer of ours
            pending = self.requests.answered("away", None)
            answer = events[0] if events else ev.Away(nick=reply.nick, text=reply.text)
            self.requests.complete(pending, answer)
        return events

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
        self.outbox.ack(reply.key, now)
        return []

    def _on_pong(self, reply: Pong, now: float) -> list[ev.Event]:
        if self.broker_id is not None and reply.broker != self.broker_id:
            return self._lose_broker(now)
        out: list[ev.Event] = []
        for name, seq in reply.seqs.items():
            track = self._tracks.get(name)
            if track is None or name in self.joins:
                continue
            epoch = reply.epochs.get(name, "")
            if track.epoch and epoch and epoch != track.epoch:
                out += track.renumbered(seq, epoch, seq)
                continue
            track.epoch = track.epoch or epoch
            track.pong(seq)
            out += self._poll_repair(name, now)
        return out

    def _on_history(self, reply: HistoryReply, now: float) -> list[ev.Event]:
        name = reply.room
        pending = self.requests.answered("history", name)
        track = self._tracks.get(name)
        if track is None or name in self.joins:
            if pending is not None and pending.purpose is Purpose.USER:
                self.requests.complete(pending, ev.HistoryEnd(room=name, count=0))
            return []
        out: list[ev.Event] = []
        if track.epoch and reply.epoch and reply.epoch != track.epoch:
            # The lines answer a numbering we no longer follow (or the reverse).
            out += track.renumbered(reply.seq, reply.epoch, reply.seq)
            if pending is not None and pending.purpose is Purpose.USER:
                end = ev.HistoryEnd(room=name, count=0)
                self.requests.complete(pending, end)
                out.append(end)
            return out
        if pending is not None and pending.purpose is Purpose.USER:
            lines: list[ev.Event] = [as_event(m, history=True) for m in reply.messages]
            if reply.messages:
                track.oldest = min(track.oldest, reply.messages[0].seq)
            # A marker, so a reader knows the fetch is over (and an empty one
            # is not mistaken for a lost answer).
            end = ev.HistoryEnd(room=name, count=len(reply.messages))
            self.requests.complete(pending, end)
            return [*lines, end]
        asked = pending.request if pending is not None else None
        out += track.history(reply, asked if isinstance(asked, History) else None)
        return out + self._poll_repair(name, now)

    def _on_error(self, reply: Error, now: float) -> list[ev.Event]:
        code = reply.code
        if code == ErrorCode.NOT_JOINED and self.state in (State.JOINED, State.RECONNECTING):
            # The broker does not know this connection (it restarted, or our
            # connection was re-made): keep every line and request and rejoin;
            # they are sent again after the rejoin.
            return self._lose_broker(now) if self.state is State.JOINED else []
        if reply.req == "hello":
            return self._hello_refused(reply, now)
        if reply.key and reply.req in ("say", "msg"):
            return self._line_refused(reply, now)
        if reply.req not in _TRACKED_KINDS:
            return [_error_event(reply)]
        pending = self.requests.answered(reply.req, reply.room)
        if code == ErrorCode.SYNCING and pending is not None:
            self.requests.later(pending, now + SYNCING_RETRY)  # the join completes soon
            return []
        if (
            reply.req == "history"
            and reply.room
            and (pending is None or pending.purpose is Purpose.REPAIR)
        ):
            track = self._tracks.get(reply.room)
            if track is not None:
                # Throttled (many rooms at once) or unavailable: the repair's
                # deadline asks again; anything else: ask again at once.
                later = code in (ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE)
                track.refused(now, retry_later=later)
                if later:
                    return []
        event = _error_event(reply)
        self.requests.complete(pending, event)
        out: list[ev.Event] = [event]
        if reply.req == "join" and reply.room:
            out += self._join_refused(reply)
        return out

    def _hello_refused(self, reply: Error, now: float) -> list[ev.Event]:
        if reply.code == ErrorCode.ALREADY_JOINED and self.state in (
            State.RECONNECTING,
            State.JOINED,
        ):
            return []  # a retried hello, after the first was answered
        if reply.code == ErrorCode.SYNC_TIMEOUT and self.state is State.RECONNECTING:
            # Our SUB missed its sync topic (a slow or cut link): passing, not
            # a refusal. Start the tries over, with fresh sockets; found by
            # the chaos suite (tests/test_session_rejoin_sync.py).
            self.retry.start(now)
            return []
        if reply.code == ErrorCode.NICK_TAKEN and self.state is State.RECONNECTING:
            waiting = self._wait_for_nick(now)
            if waiting is not None:
                return waiting
        if self.state is State.JOINING:
            self.joins.lost()
            self._move(State.IDLE)
        elif self.state is State.RECONNECTING:
            self.close_reason = reply.code
            self._move(State.CLOSED)
        return [_error_event(reply)]

    def _wait_for_nick(self, now: float) -> list[ev.Event] | None:
        """A rejoin refused as ``nick_taken``: our old session (or one an
        earlier try made on sockets we closed) still holds the nickname and
        times out by itself. Keep trying on the backoff until it must have
        (the broker's timeout and three heartbeats after the sockets were
        made anew; docs/PROTOCOL.md §5.3, step 4); None once past that."""
        until = self._reset_at + self.broker_timeout + self._dead_after
        if now >= until:
            return None
        if self._told_nick_wait:
            return []
        self._told_nick_wait = True
        return [ev.Connection(state="waiting_for_nick", wait=round(until - now, 1))]

    def _line_refused(self, reply: Error, now: float) -> list[ev.Event]:
        key = reply.key
        assert key is not None
        code = reply.code
        if code == ErrorCode.RATE_LIMITED and self.outbox.throttled(key, now):
            return []
        if code == ErrorCode.UNAVAILABLE and self.outbox.later(key, now, UNAVAILABLE_RETRY):
            return []  # not stored, not published: resend later, same key
        if code == ErrorCode.SYNCING and self.outbox.later(key, now, SYNCING_RETRY):
            return []  # the session's join completes soon: send it again then
        failed = self.outbox.fail(key)
        if failed is None:
            return [_error_event(reply)]  # not ours (any more)
        return [_error_event(reply, text=failed.text, key=key)]

    def _join_refused(self, reply: Error) -> list[ev.Event]:
        room = reply.room
        assert room is not None
        if room in self._tracks and not self.joins.rejoining(room):
            return []  # e.g. a stale join's sync_timeout for a room we are in
        if self.joins.refused(room):
            self._tracks.pop(room, None)  # the restarted broker refused it
        self._out.subscribe.append((False, room_topic(room)))
        if self.current == room:
            self.current = self.rooms[-1] if self._tracks else None
        out: list[ev.Event] = [
            ev.Error(
                code=reply.code,
                message=f"not delivered: you could not join {room}",
                req="say",
                room=room,
                text=line.text,
                key=line.key,
            )
            for line in self.outbox.fail_room(room)
        ]
        return out + self._maybe_reconnected(self._now)

    def _on_shutdown(self, reply: Shutdown, now: float) -> list[ev.Event]:
        if self.state in (State.CLOSING, State.CLOSED):
            return []
        # Stay ready to reconnect: a restarted broker will take us back.
        out: list[ev.Event] = [ev.Shutdown(reason=reply.reason)]
        if self.state is State.JOINED:
            out += self._lose_broker(now, shutdown=True)
        elif self.state is State.RECONNECTING:
            self.retry.start(now, shutdown=True)  # the broker we reached is going
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

    def _tracked(self, request: Tracked) -> None:
        self.last_request = self.requests.add(request, self._now)
        self._send(request)

    def _paced(self, request: Join | Part | Rename) -> None:
        """A request the broker's flood bucket counts: in turn with the lines."""
        self.last_request = self.requests.add(request, self._now, queued=True)
        self.outbox.control(request)
        self._flush_outbox(self._now)

    def _resend_requests(self, now: float) -> None:
        for request in self.requests.resend(now):
            if isinstance(request, Part | Rename):
                self.outbox.control(request)  # the flood bucket counts these
            else:
                self._send(request)

    def _flush_outbox(self, now: float) -> None:
        if self.state is State.JOINED:
            for request in self.outbox.send_due(now):
                if isinstance(request, Join | Part | Rename):
                    self.requests.sent(request, now)
                self._send(request)

    def _poll_repair(self, name: str, now: float) -> list[ev.Event]:
        track = self._tracks.get(name)
        if track is None or name in self.joins or self.state is not State.JOINED:
            return []
        out, request = track.poll(now, self._repair_timeout)
        if request is not None:
            self.requests.add(request, now, Purpose.REPAIR)
            self._send(request)
        return out

    @property
    def _repair_timeout(self) -> float:
        return self._dead_after

    def _renumbered(self, track: RoomTrack, epoch: str, seq: int) -> bool:
        """Whether a rejoin's numbering is not the one we follow (contract §1)."""
        if epoch and track.epoch:
            return epoch != track.epoch
        if not epoch and not track.epoch:
            # An old broker names no epoch: only a restarted one (a new id)
            # with fewer lines than we saw can have lost its history. Broadcasts
            # are held until joined, so this is no reordering.
            return self._restarted and seq < track.last
        return False

    def _subscribe_sync(self, number: int) -> None:
        if self.session_token is not None:
            self._out.subscribe.append((True, sync_topic(self.session_token, number)))

    def _hello_rooms(self) -> list[str]:
        if not self._tracks:
            return list(dict.fromkeys(self.wanted_rooms + self.requests.joins_waiting()))
        return list(dict.fromkeys(list(self._tracks) + self.requests.joins_waiting()))

    def _require_joined(self) -> None:
        if self.state is State.RECONNECTING:
            raise ProtocolError(
                ErrorCode.NOT_JOINED,
                "not connected to the broker right now (reconnecting); try again once reconnected",
            )
        if self.state is not State.JOINED:
            raise ProtocolError(ErrorCode.NOT_JOINED, f"not in the chat ({self.state.value})")

    def _lose_broker(self, now: float, *, shutdown: bool = False) -> list[ev.Event]:
        self._move(State.RECONNECTING)
        self.retry.start(now, shutdown=shutdown)
        self._told_nick_wait = False
        for track in self._tracks.values():
            track.lost()
        self.joins.lost()
        self.outbox.hold_all()  # paced joins, parts, renames: the tracker resends
        self.requests.lost()
        return [ev.Connection(state="reconnecting", endpoint=self._named())]

    def _named(self) -> str:
        # Only with several endpoints (failover): with one, events stay as
        # they always were, and so does the JSON mode's output.
        return self.server if len(self.endpoints) > 1 else ""


#: Requests whose answers (or errors) the request tracker matches.
_TRACKED_KINDS = frozenset({"join", "part", "nick", "who", "rooms", "history", "topic", "away"})


def _error_event(reply: Error, *, text: str | None = None, key: str | None = None) -> ev.Error:
    return ev.Error(
        code=reply.code,
        message=reply.message,
        req=reply.req,
        room=reply.room,
        text=text,
        key=key,
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
    TopicReply: ClientSession._on_topic,
    AwayReply: ClientSession._on_away,
}
