"""The client's session core, with no sockets: shared by ``Client``,
``AsyncClient``, the CLI and bots (docs/PROTOCOL.md §5).

The front-end feeds it what arrives (:meth:`ClientSession.on_reply`,
:meth:`ClientSession.on_broadcast`) and the time (:meth:`ClientSession.tick`),
calls user operations (:meth:`say`, :meth:`join`...), and after each call
carries out :meth:`take_output`: reset the sockets, connect the SUB, change
subscriptions, send requests, in that order. A request the socket could not
take goes back through :meth:`not_sent`.

The session owns its own state (client/lifecycle.py: idle, joining, joined,
reconnecting, closing, closed) and what moves it: ``hello`` and its
welcome, the broker's liveness, the tries to reconnect. Everything else is
a part with a module of its own, each owning one thing:

* :class:`client.inbound.Inbound`: what each reply and broadcast means, and
  for which part (the routing tables, errors included);
* :class:`client.rooms.Rooms`: the rooms we are in: one
  :class:`client.sequencer.RoomTrack` each (each line once and in order, gap
  repair: the Clone pattern), the :class:`client.joins.Joins` under way
  (broadcasts held until their ``joined``) and the
  :class:`client.membership.Membership`;
* :class:`client.outgoing.Outgoing`: the output, with the
  :class:`client.outbox.Outbox` (lines until acknowledged, their keys,
  pacing, resends) and the :class:`client.requests.RequestTracker` (every
  request answered or failed);
* :class:`client.presence.Presence`: room topics and who is away, and the
  answers to our ``topic`` and ``away`` requests;
* :class:`client.link.Link`: the broker: what its welcome said, whether it
  is alive, when (:class:`client.reconnect.Retry`) and where
  (:class:`client.failover.Endpoints`) to say ``hello`` again.

Dependencies point down: the session builds the parts and hands itself to
the inbound routing as a :class:`client.inbound.Core`; no part imports it.

The broker is lost when it is silent for three heartbeats, says
``shutdown``, or, at once, when the front-end sees its connection close
(:meth:`ClientSession.link_dropped`, seen by client/handshake.py's monitor).

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

from client import events as ev
from client.inbound import Inbound, error_event
from client.lifecycle import State, check_move
from client.link import Link
from client.outbox import LineState, Outbox
from client.outgoing import Outgoing, Output
from client.presence import Presence
from client.requests import REQUEST_TIMEOUT, RequestTracker, Tracked
from client.rooms import Rooms
from protocol import (
    PROTOCOL_VERSION,
    Away,
    Broadcast,
    Bye,
    Error,
    ErrorCode,
    Goodbye,
    Hello,
    Join,
    Limits,
    ListRooms,
    Part,
    Ping,
    ProtocolError,
    Rename,
    Reply,
    Request,
    Say,
    SendPrivate,
    Shutdown,
    Topic,
    Welcome,
    Who,
    validate_away,
    validate_nick,
    validate_room,
    validate_text,
    validate_topic,
)

__all__ = ["ClientSession", "Output", "State"]

#: Lines fetched from history when joining a room (the ``--backlog`` default).
DEFAULT_BACKLOG = 50


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
        self.close_reason: str | None = None
        #: The broker: which one, what its welcome said, whether it is alive.
        self.link = Link(server, pub_override=pub_override, jitter=jitter)
        self.outbox = Outbox()
        self.requests = RequestTracker()
        #: The output, kept in step with the outbox and the request tracker.
        self.sending = Outgoing(self.outbox, self.requests)
        self.our_rooms = Rooms(self.sending, backlog=backlog, repair_timeout=self.link.dead_after)
        #: Topics of our rooms and who is away (docs/PROTOCOL.md "Room topics", "Away").
        self.presence = Presence(self.sending)
        self.inbound = Inbound(self, self.link, self.our_rooms, self.presence, self.sending)
        #: Id of the request the latest operation made (see :meth:`take_completions`).
        self.last_request: int | None = None
        self._now = 0.0

    @property
    def server(self) -> str:
        """The ROUTER endpoint in use (the front-end connects its DEALER there
        at every reset)."""
        return self.link.server

    @property
    def limits(self) -> Limits | None:
        """The broker's limits from the latest welcome (a restarted broker may
        have other ones); None before the first welcome."""
        return self.link.limits

    # --- the front-end's side --------------------------------------------

    def take_output(self) -> Output:
        """What to do now; the session forgets it once taken."""
        return self.sending.take()

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
        self.sending.not_sent(requests, now)

    @property
    def rooms(self) -> list[str]:
        """Rooms we are in, in joining order."""
        return self.our_rooms.names()

    @property
    def members(self) -> dict[str, list[str]]:
        """Room -> its members as we know them."""
        return self.our_rooms.membership.members

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
        return self.our_rooms.repairs

    @property
    def busy(self) -> bool:
        """Whether something we asked for is unfinished: a line not yet
        acknowledged (sent, paced or held), a request unanswered or a room
        still being joined. A front-end waits for this to clear before leaving,
        so that lines typed just before the end of input are not lost."""
        return bool(len(self.outbox) or self.our_rooms.joins or self.requests.busy())

    @property
    def caught_up(self) -> bool:
        """Whether every line of ours the broker acknowledged has come back as
        a broadcast (or a repair) and been shown: a front-end leaving waits
        for that too, so a script sees its own lines (in cluster mode the
        broadcast comes after the ack, through Redis)."""
        return self.our_rooms.caught_up()

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
        self.move(State.JOINING)
        self._now = now
        self.link.hello(now)
        self.sending.send(Hello(v=PROTOCOL_VERSION, nick=self.nick, rooms=self.wanted_rooms))

    def tick(self, now: float) -> list[ev.Event]:
        """Heartbeats, liveness of the broker, repairs, resends, paced lines,
        reconnect attempts."""
        self._now = now
        out: list[ev.Event] = []
        if self.state is State.JOINED:
            if self.link.dead(now):
                return self.lose_broker(now)
            out += self.our_rooms.poll_all(now)
            out += self.our_rooms.membership.expired(now)
            out += self.requests.expired(now)
            self.sending.resend(now)
            self.sending.flush(now)
            if self.link.ping_due(now):
                self.sending.send(Ping())
        elif self.state is State.JOINING and self.link.first_try_over(now):
            self.sending.reset()  # the first hello goes to the next broker
            self.sending.send(Hello(v=PROTOCOL_VERSION, nick=self.nick, rooms=self.wanted_rooms))
        elif self.state is State.RECONNECTING and (fresh := self.link.try_due(now)) is not None:
            if fresh:
                self.sending.reset()
            token = self.link.session_token
            rooms = self._hello_rooms()
            self.sending.send(Hello(v=PROTOCOL_VERSION, nick=self.nick, rooms=rooms, resume=token))
        return out

    def on_reply(self, reply: Reply, now: float) -> list[ev.Event]:
        """Handle what the broker sent to us privately."""
        self.link.last_heard = self._now = now
        return self.inbound.reply(reply, now)

    def on_broadcast(self, message: Broadcast, now: float) -> list[ev.Event]:
        """Handle what arrived on the SUB socket."""
        return self.inbound.broadcast(message, now)

    # --- user operations -------------------------------------------------

    def say(self, text: str, room: str | None = None, *, action: bool = False) -> str:
        """Send a line to ``room`` (default: the current room); returns its key.

        Raises ProtocolError for an invalid line or when not in that room.
        """
        validate_text(text)
        target = self._room(room, "you are in no room: /join one")
        if target not in self.our_rooms and target not in self.our_rooms.joins:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {target}")
        key = self.outbox.new_key()
        ready = self.state is State.JOINED and target in self.our_rooms
        self.outbox.add(Say(room=target, text=text, action=action, key=key), ready=ready)
        self.sending.flush(self._now)
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
        self.sending.flush(self._now)
        return key

    def join(self, room: str) -> str:
        """Join ``room`` (and make it current once joined); returns its canonical name.

        :attr:`last_request` names the request (None: already in the room)."""
        name = validate_room(room)
        self.last_request = None
        if name in self.our_rooms:
            self.current = name
            return name
        self._require_joined()
        # Switch at once, so a line typed right after /join goes there; it is
        # held until the broker confirms the join.
        self.current = name
        sync = self.our_rooms.begin(name, self.link.session_token)
        if sync is not None:
            self.last_request = self.sending.pace(Join(room=name, sync=sync), self._now)
        return name

    def part(self, room: str | None = None) -> str:
        """Leave ``room`` (default: the current one); returns its name."""
        name = self._our_room(room)
        self._require_joined()
        self.last_request = self.sending.pace(Part(room=name), self._now)
        return name

    def rename(self, nick: str) -> None:
        """Ask to change nickname (the answer is a ``nick`` or ``error`` event)."""
        validate_nick(nick)
        if nick == self.nick:  # a change of case only is a real rename
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"you are already called {nick}")
        self._require_joined()
        self.last_request = self.sending.pace(Rename(nick=nick), self._now)

    def who(self, room: str | None = None) -> None:
        """Ask who is in ``room`` (default: the current one)."""
        name = self._room(room, "you are in no room: name one")
        self._require_joined()
        self._ask(Who(room=name))

    def list_rooms(self) -> None:
        """Ask for the rooms that have members."""
        self._require_joined()
        self._ask(ListRooms())

    def fetch_history(self, count: int, room: str | None = None) -> None:
        """Ask for ``count`` lines older than the oldest we have seen of ``room``."""
        name = self._our_room(room)
        self._require_joined()
        self._ask(self.our_rooms.older(name, count))

    def topic(self, text: str | None = None, room: str | None = None) -> None:
        """Ask for the topic of ``room`` (default: the current one), or set
        it to ``text`` ("" clears it); a ``topic`` event follows."""
        name = self._room(room, "you are in no room: name one")
        if text is not None:
            text = validate_topic(text)
            if name not in self.our_rooms:
                raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {name}")
        self._require_joined()
        self._ask(Topic(room=name, text=text))

    def away(self, text: str = "") -> None:
        """Mark us away with ``text`` as the reason, or back with ""."""
        text = validate_away(text)
        self._require_joined()
        self._ask(Away(text=text))

    def leave(self) -> None:
        """Say goodbye; the session closes when the broker answers."""
        if self.state in (State.JOINED, State.RECONNECTING, State.JOINING):
            self.move(State.CLOSING)
            self.sending.send(Bye())
        elif self.state is State.IDLE:
            self.move(State.CLOSED)

    def closed_by_front_end(self, reason: str) -> None:
        """The front-end gave up (e.g. no goodbye in time): mark the session closed."""
        if self.state is not State.CLOSED:
            self.close_reason = reason
            self.move(State.CLOSED)

    # --- what moves the session's state (client/inbound.py routes here) -----

    def on_welcome(self, reply: Welcome, now: float) -> list[ev.Event]:
        """The broker took our ``hello``: its limits and timings hold from now on,
        and our rooms are joined at the sync (docs/PROTOCOL.md §5.1)."""
        if self.state is State.JOINED:
            return []  # a late answer to a retried hello; we are in already
        link = self.link
        self.sending.connect_pub(link.welcome(reply, now))
        self.outbox.bucket.configure(reply.limits.rate, reply.limits.burst)
        self.outbox.resend_after = max(2 * link.heartbeat, 1.0)
        self.requests.timeout = max(REQUEST_TIMEOUT, reply.timeout + link.dead_after)
        self.our_rooms.repair_timeout = link.dead_after
        self.nick = reply.nick
        if self.state is State.RECONNECTING:
            # The joins come at the sync; if they never do, start over.
            link.retry.welcomed(now, link.broker_timeout + link.dead_after)
        self.our_rooms.expect(self._hello_rooms(), link.session_token)
        return []

    def reconnected(self, now: float) -> list[ev.Event]:
        """Back in every room (or refused the ones we could not rejoin)."""
        if self.state is not State.RECONNECTING or self.our_rooms.joins:
            return []
        self.move(State.JOINED)
        # The broker drops any line it already has, by key (§5.5).
        self.outbox.release(set(self.our_rooms.names()))
        self.sending.resend(now)
        self.sending.flush(now)
        self.presence.restore(now)  # a restarted broker forgot our away message
        link = self.link
        moved, link.moved = link.moved, False
        restarted, link.restarted = link.restarted and not moved, False
        out: list[ev.Event] = [
            ev.Connection(
                state="reconnected",
                restarted=restarted,
                moved=moved,
                broker=(link.broker_id or "") if restarted or moved else "",
                endpoint=link.named(),
            )
        ]
        return out + self.our_rooms.poll_all(now)  # what was missed meanwhile

    def lose_broker(self, now: float, *, shutdown: bool = False) -> list[ev.Event]:
        """The broker is gone (silent, restarted, ``shutdown``): reconnect,
        keeping every line and request to send again after the rejoin."""
        self.move(State.RECONNECTING)
        self.link.lost(now, shutdown=shutdown)
        self.our_rooms.lost()
        self.outbox.hold_all()  # paced joins, parts, renames: the tracker resends
        self.requests.lost()
        return [ev.Connection(state="reconnecting", endpoint=self.link.named(), shutdown=shutdown)]

    def link_dropped(self, now: float) -> list[ev.Event]:
        """The front-end saw the connection to the broker close (ZeroMQ's
        socket monitor, client/handshake.py: a broker killed or crashed
        closes it at once): the broker is lost now, as after three silent
        heartbeats.

        Taken at its word, never confirmed: ZeroMQ reconnects by itself, and
        a broker still there resumes the session (same token, §5.3) in one
        round trip, while one that is gone or restarted would otherwise cost
        the whole liveness limit. Only a joined session acts on it; while
        joining or reconnecting the tries and their timeouts already run."""
        if self.state is not State.JOINED:
            return []
        self._now = max(self._now, now)
        return self.lose_broker(now)

    def hello_refused(self, reply: Error, now: float) -> list[ev.Event]:
        """The broker refused our ``hello``: a refusal, or passing while we rejoin."""
        if reply.code == ErrorCode.ALREADY_JOINED and self.state in (
            State.RECONNECTING,
            State.JOINED,
        ):
            return []  # a retried hello, after the first was answered
        if reply.code == ErrorCode.SYNC_TIMEOUT and self.state is State.RECONNECTING:
            # Our SUB missed its sync topic (a slow or cut link): passing, not
            # a refusal. Start the tries over, with fresh sockets; found by
            # the chaos suite (tests/test_session_rejoin_sync.py).
            self.link.retry.start(now)
            return []
        if reply.code == ErrorCode.UNAVAILABLE and self.state is State.RECONNECTING:
            # A cluster broker that cannot reach Redis now cannot take our
            # session over: retryable, so keep trying (the next endpoint in
            # turn, about once a second: not started over, which would ask
            # again at once, and not the grown back-off, which would come
            # after the others reaped our old broker) until it can; found by
            # hand.
            self.link.retry.unavailable(now)
            return []
        if reply.code == ErrorCode.NICK_TAKEN and self.state is State.RECONNECTING:
            waiting = self.link.wait_for_nick(now)
            if waiting is not None:
                return waiting
        if self.state is State.JOINING:
            self.our_rooms.joins.lost()
            self.move(State.IDLE)
        elif self.state is State.RECONNECTING:
            self.close_reason = reply.code
            self.move(State.CLOSED)
        return [error_event(reply)]

    def handshake_refused(self, server: str, message: str, now: float) -> list[ev.Event]:
        """The broker at ``server`` refused our key (or CURVE itself) while we
        reconnect: a broker restarted with another key, or one of the cluster
        that does not know ours. Say so, naming it, and go on with the other
        endpoints; with none left, give up (``auth_failed``): trying again
        cannot help until someone changes a key. While joining, ``connect``
        fails instead (client/aio.py); while joined the broker is still
        there, and a fresh try will tell."""
        if self.state is not State.RECONNECTING:
            return []
        others = self.link.refused_by(server)
        if others is None:
            return []
        if others:
            return [ev.Connection(state="auth_failed", endpoint=server, message=message)]
        self.close_reason = "auth_failed"
        self.move(State.CLOSED)
        more = "every broker refused it; giving up" if len(self.link.endpoints) > 1 else "giving up"
        return [ev.Error(code="auth_failed", message=f"{message} (while reconnecting; {more})")]

    def on_shutdown(self, reply: Shutdown, now: float) -> list[ev.Event]:
        """The broker is going: stay ready to reconnect, a restarted broker
        will take us back."""
        if self.state in (State.CLOSING, State.CLOSED):
            return []
        moving = len(self.link.endpoints) > 1
        out: list[ev.Event] = [ev.Shutdown(reason=reply.reason, moving=moving)]
        if self.state is State.JOINED:
            out += self.lose_broker(now, shutdown=True)
        elif self.state is State.RECONNECTING:
            self.link.retry.start(now, shutdown=True)  # the broker we reached is going
        return out

    def on_goodbye(self, reply: Goodbye, now: float) -> list[ev.Event]:
        """The broker answered our ``bye``: the session is over."""
        if self.state is not State.CLOSED:
            self.close_reason = "exit"
            self.move(State.CLOSED)
        return []

    def move(self, new: State) -> None:
        """Go to state ``new``; raises ProtocolError (``not_joined``) for a move
        client/lifecycle.py does not allow."""
        self.state = check_move(self.state, new)
        self.sending.open = self.state is State.JOINED

    # --- helpers ---------------------------------------------------------

    def _ask(self, request: Tracked) -> None:
        self.last_request = self.sending.track(request, self._now)

    def _room(self, room: str | None, none: str) -> str:
        """``room`` checked, or the current room; ``none``: the error without one."""
        name = validate_room(room) if room is not None else self.current
        if name is None:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, none)
        return name

    def _our_room(self, room: str | None) -> str:
        """:meth:`_room`, and one we are in."""
        name = validate_room(room) if room is not None else self.current
        if name is None or name not in self.our_rooms:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {name or 'any room'}")
        return name

    def _hello_rooms(self) -> list[str]:
        return self.our_rooms.hello_rooms(self.wanted_rooms, self.requests.joins_waiting())

    def _require_joined(self) -> None:
        if self.state is State.RECONNECTING:
            raise ProtocolError(
                ErrorCode.NOT_JOINED,
                "not connected to the broker right now (reconnecting); try again once reconnected",
            )
        if self.state is not State.JOINED:
            raise ProtocolError(ErrorCode.NOT_JOINED, f"not in the chat ({self.state.value})")
