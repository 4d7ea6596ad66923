"""What each message from the broker means for the session core's parts: the
routing tables for replies (the DEALER socket) and broadcasts (the SUB
socket), and the routing of errors (docs/PROTOCOL.md §4, §6).

Replies and broadcasts go to the part that owns what they are about: a
room's lines, pongs and history to :class:`client.rooms.Rooms`, topics and
away states to :class:`client.presence.Presence`, acknowledgements and
refused lines to the outbox, answers to the request tracker. What changes
the session's own state (a welcome, a lost broker, a refused ``hello``, a
shutdown, the goodbye) goes back to the session through :class:`Core`, the
little of it this module needs: the session (client/session.py) sits above
and hands itself in, so the dependency still points down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from client import events as ev
from client.lifecycle import State
from client.link import Link
from client.outgoing import Outgoing
from client.presence import Presence
from client.requests import Pending, Purpose
from client.rooms import Rooms
from protocol import (
    Ack,
    AwayNotice,
    AwayReply,
    Broadcast,
    ChatMessage,
    Error,
    ErrorCode,
    Goodbye,
    HistoryReply,
    Joined,
    JoinNotice,
    JoinsNotice,
    LeaveNotice,
    NickNotice,
    Parted,
    Pong,
    PrivateMessage,
    Renamed,
    Reply,
    RoomList,
    Shutdown,
    TopicNotice,
    TopicReply,
    Welcome,
    WhoReply,
)

__all__ = ["SYNCING_RETRY", "UNAVAILABLE_RETRY", "Core", "Inbound"]

#: Resend delay of a line the broker could not store (``unavailable``).
UNAVAILABLE_RETRY = 1.0
#: Resend delay of a request refused as ``syncing`` (our join is completing).
SYNCING_RETRY = 0.5

#: Requests whose answers (or errors) the request tracker matches.
_TRACKED_KINDS = frozenset({"join", "part", "nick", "who", "rooms", "history", "topic", "away"})


class Core(Protocol):
    """What the routing needs of the session that owns it."""

    nick: str
    current: str | None

    @property
    def state(self) -> State:
        """Where the session is in its life."""

    def move(self, new: State) -> None:
        """Go to state ``new``."""

    def on_welcome(self, reply: Welcome, now: float) -> list[ev.Event]:
        """The broker took our ``hello``."""

    def on_shutdown(self, reply: Shutdown, now: float) -> list[ev.Event]:
        """The broker is going away."""

    def on_goodbye(self, reply: Goodbye, now: float) -> list[ev.Event]:
        """The broker answered our ``bye``."""

    def hello_refused(self, reply: Error, now: float) -> list[ev.Event]:
        """The broker refused our ``hello``."""

    def lose_broker(self, now: float, *, shutdown: bool = False) -> list[ev.Event]:
        """The broker is gone: start reconnecting."""

    def reconnected(self, now: float) -> list[ev.Event]:
        """Reconnecting is over if every room is joined again (or refused)."""


class Inbound:
    """Routes what the broker sends to the parts that own it."""

    def __init__(
        self, core: Core, link: Link, rooms: Rooms, presence: Presence, sending: Outgoing
    ) -> None:
        self.core = core
        self.link = link
        self.rooms = rooms
        self.presence = presence
        self.sending = sending
        self.requests = sending.requests

    def reply(self, reply: Reply, now: float) -> list[ev.Event]:
        """What arrived on the DEALER socket, for us alone."""
        handler = _REPLIES.get(type(reply))
        return handler(self, reply, now) if handler is not None else []

    def broadcast(self, message: Broadcast, now: float) -> list[ev.Event]:
        """What arrived on the SUB socket: held while its room is being joined,
        dropped for a room we just left (the unsubscribe is on its way)."""
        if self.rooms.joins.hold(message) or message.room not in self.rooms:
            return []
        handler = _BROADCASTS.get(type(message))
        return handler(self, message, now) if handler is not None else []

    # --- replies -------------------------------------------------------------

    def _welcome(self, reply: Welcome, now: float) -> list[ev.Event]:
        return self.core.on_welcome(reply, now)

    def _shutdown(self, reply: Shutdown, now: float) -> list[ev.Event]:
        return self.core.on_shutdown(reply, now)

    def _goodbye(self, reply: Goodbye, now: float) -> list[ev.Event]:
        return self.core.on_goodbye(reply, now)

    def _joined(self, reply: Joined, now: float) -> list[ev.Event]:
        core, name = self.core, reply.room
        link = self.link
        out, waiting, again = self.rooms.joined(
            reply,
            token=link.session_token,
            restarted=link.restarted,
            me=core.nick,
            grace=link.broker_timeout + link.dead_after,
            now=now,
        )
        self.presence.joined(reply)
        pending = self.requests.answered("join", name)
        if core.state is State.JOINING:
            core.move(State.JOINED)
            welcome = ev.Welcome(
                nick=core.nick,
                room=name,
                rooms=self.rooms.names(),
                members=reply.members,
                topic=reply.topic,
            )
            out.append(welcome)
        elif core.state is State.JOINED or (core.state is State.RECONNECTING and not again):
            # A rejoin of a room we were in is no news to the user.
            joined = ev.Joined(room=name, members=list(reply.members), topic=reply.topic)
            self.requests.complete(pending, joined)
            out.append(joined)
        for message in waiting:
            out += self.broadcast(message, now)
        out += core.reconnected(now)
        out += self.rooms.poll(name, now)
        if self.sending.open:
            self.sending.outbox.release({name})
            self.sending.flush(now)
        return out

    def _parted(self, reply: Parted, now: float) -> list[ev.Event]:
        self.rooms.parted(reply.room)
        self.presence.parted(reply.room)
        self._left(reply.room)
        return self._answer(self.requests.answered("part", reply.room), ev.Parted(room=reply.room))

    def _renamed(self, reply: Renamed, now: float) -> list[ev.Event]:
        self.core.nick = reply.new
        event = ev.Nick(old=reply.old, new=reply.new)
        return self._answer(self.requests.answered("nick", None), event)

    def _who(self, reply: WhoReply, now: float) -> list[ev.Event]:
        if reply.room in self.rooms:
            self.rooms.membership.who(reply.room, list(reply.members))
        self.presence.who(reply.members, reply.away)
        event = ev.Who(room=reply.room, members=list(reply.members), away=dict(reply.away))
        return self._answer(self.requests.answered("who", reply.room), event)

    def _rooms(self, reply: RoomList, now: float) -> list[ev.Event]:
        event = ev.Rooms(rooms=[ev.RoomCount(room=r.room, members=r.members) for r in reply.rooms])
        return self._answer(self.requests.answered("rooms", None), event)

    def _topic(self, reply: TopicReply, now: float) -> list[ev.Event]:
        return self.presence.on_topic_reply(reply)

    def _away(self, reply: AwayReply, now: float) -> list[ev.Event]:
        return self.presence.on_away_reply(reply, self.core.nick)

    def _private(self, reply: PrivateMessage, now: float) -> list[ev.Event]:
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

    def _ack(self, reply: Ack, now: float) -> list[ev.Event]:
        self.sending.outbox.ack(reply.key, now)
        self.rooms.ours_acked(reply.room, reply.seq)
        return []

    def _pong(self, reply: Pong, now: float) -> list[ev.Event]:
        broker = self.link.broker_id
        if broker is not None and reply.broker != broker:
            return self.core.lose_broker(now)  # restarted: our session is gone
        return self.rooms.pong(reply, now)

    def _history(self, reply: HistoryReply, now: float) -> list[ev.Event]:
        return self.rooms.history(reply, self.requests.answered("history", reply.room), now)

    # --- errors --------------------------------------------------------------

    def _error(self, reply: Error, now: float) -> list[ev.Event]:
        core, code = self.core, reply.code
        if code == ErrorCode.NOT_JOINED and core.state in (State.JOINED, State.RECONNECTING):
            # The broker does not know this connection (it restarted, or our
            # connection was re-made): keep every line and request and rejoin;
            # they are sent again after the rejoin.
            return core.lose_broker(now) if core.state is State.JOINED else []
        if reply.req == "hello":
            return core.hello_refused(reply, now)
        if reply.key and reply.req in ("say", "msg"):
            return self._line_refused(reply, now)
        if reply.req not in _TRACKED_KINDS:
            return [error_event(reply)]
        pending = self.requests.answered(reply.req, reply.room)
        if code == ErrorCode.SYNCING and pending is not None:
            self.requests.later(pending, now + SYNCING_RETRY)  # the join completes soon
            return []
        if (
            reply.req == "history"
            and reply.room
            and (pending is None or pending.purpose is Purpose.REPAIR)
        ):
            track = self.rooms.tracks.get(reply.room)
            if track is not None:
                # Throttled (many rooms at once) or unavailable: the repair's
                # deadline asks again; anything else: ask again at once.
                later = code in (ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE)
                track.refused(now, retry_later=later)
                if later:
                    return []
        out = self._answer(pending, error_event(reply))
        if reply.req == "join" and reply.room:
            out += self._join_refused(reply.room, reply.code, now)
        return out

    def _line_refused(self, reply: Error, now: float) -> list[ev.Event]:
        outbox, key, code = self.sending.outbox, reply.key, reply.code
        assert key is not None
        if code == ErrorCode.RATE_LIMITED and outbox.throttled(key, now):
            return []
        if code == ErrorCode.UNAVAILABLE and outbox.later(key, now, UNAVAILABLE_RETRY):
            return []  # not stored, not published: resend later, same key
        if code == ErrorCode.SYNCING and outbox.later(key, now, SYNCING_RETRY):
            return []  # the session's join completes soon: send it again then
        failed = outbox.fail(key)
        if failed is None:
            return [error_event(reply)]  # not ours (any more)
        return [error_event(reply, text=failed.text, key=key)]

    def _join_refused(self, room: str, code: str, now: float) -> list[ev.Event]:
        if not self.rooms.refused(room):
            return []  # e.g. a stale join's sync_timeout for a room we are in
        self._left(room)
        out: list[ev.Event] = [
            ev.Error(
                code=code,
                message=f"not delivered: you could not join {room}",
                req="say",
                room=room,
                text=line.text,
                key=line.key,
            )
            for line in self.sending.outbox.fail_room(room)
        ]
        return out + self.core.reconnected(now)

    # --- broadcasts ----------------------------------------------------------

    def _line(self, message: ChatMessage, now: float) -> list[ev.Event]:
        out = self.rooms.tracks[message.room].line(message)
        return out + self.rooms.poll(message.room, now)

    def _presence(self, message: TopicNotice | AwayNotice, now: float) -> list[ev.Event]:
        return self.presence.on_notice(message, self.core.nick)

    def _nick_changed(self, message: NickNotice, now: float) -> list[ev.Event]:
        self.presence.renamed(message.old, message.new)
        return self._members(message, now)

    def _members(self, message: Broadcast, now: float) -> list[ev.Event]:
        return self.rooms.membership.notice(message, self.core.nick)

    # --- helpers -------------------------------------------------------------

    def _answer(self, pending: Pending | None, event: ev.Event) -> list[ev.Event]:
        """``event`` answers ``pending`` (if it is the user's) and is shown."""
        self.requests.complete(pending, event)
        return [event]

    def _left(self, room: str) -> None:
        """``room`` is no longer ours: the latest joined one becomes current."""
        if self.core.current == room:
            names = self.rooms.names()
            self.core.current = names[-1] if names else None


def error_event(reply: Error, *, text: str | None = None, key: str | None = None) -> ev.Error:
    """The ``error`` event of ``reply`` (``text``, ``key``: of the line refused)."""
    return ev.Error(
        code=reply.code,
        message=reply.message,
        req=reply.req,
        room=reply.room,
        text=text,
        key=key,
    )


_Handler = Callable[[Inbound, Any, float], list[ev.Event]]

#: reply type -> its handler.
_REPLIES: dict[type, _Handler] = {
    Welcome: Inbound._welcome,
    Joined: Inbound._joined,
    Parted: Inbound._parted,
    Renamed: Inbound._renamed,
    WhoReply: Inbound._who,
    RoomList: Inbound._rooms,
    PrivateMessage: Inbound._private,
    Ack: Inbound._ack,
    Pong: Inbound._pong,
    HistoryReply: Inbound._history,
    Error: Inbound._error,
    Shutdown: Inbound._shutdown,
    Goodbye: Inbound._goodbye,
    TopicReply: Inbound._topic,
    AwayReply: Inbound._away,
}

#: broadcast type -> its handler (for a room we are in).
_BROADCASTS: dict[type, _Handler] = {
    ChatMessage: Inbound._line,
    TopicNotice: Inbound._presence,
    AwayNotice: Inbound._presence,
    NickNotice: Inbound._nick_changed,
    JoinNotice: Inbound._members,
    JoinsNotice: Inbound._members,
    LeaveNotice: Inbound._members,
}
