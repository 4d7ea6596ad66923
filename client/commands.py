"""The slash commands shared by the interactive client and ``--json`` mode.

A line that does not start with ``/`` is a chat line for the current room; a
line starting with ``//`` sends the rest, starting with one ``/``, as text.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from client import events as ev
from client.aio import AsyncClient
from protocol import ProtocolError, nick_key, validate_room

__all__ = ["COMMANDS", "EXIT", "REPLY_TIMEOUT", "InOrder", "execute", "help_event"]

#: How long a command waits for the broker's answer to an earlier one before
#: it is carried out anyway (with a ``no_answer`` error for the earlier one).
#: Generous: a reconnect to a restarted broker takes seconds, and the session
#: resends what it asked (issue 12, item 4).
REPLY_TIMEOUT = 30.0

#: What :func:`execute` returns when the user asked to leave.
EXIT = "exit"


@dataclass(frozen=True)
class _Spec:
    usage: str
    description: str


COMMANDS: dict[str, _Spec] = {
    "join": _Spec("/join ROOM", "join a room and make it the current one"),
    "part": _Spec("/part [ROOM]", "leave a room (default: the current one)"),
    "rooms": _Spec("/rooms", "list rooms with their member counts"),
    "who": _Spec("/who [ROOM]", "list who is in a room (default: the current one)"),
    "msg": _Spec("/msg NICK TEXT", "send a private message"),
    "me": _Spec("/me ACTION", "say what you are doing (* nick waves)"),
    "nick": _Spec("/nick NEW", "change your nickname"),
    "history": _Spec("/history [N]", "show N older lines of the current room (default 50)"),
    "topic": _Spec("/topic [TEXT]", "show the room's topic, or set it (/topic - clears it)"),
    "away": _Spec("/away [MESSAGE]", "mark yourself away (private lines get MESSAGE back)"),
    "back": _Spec("/back", "you are back (no longer away)"),
    "help": _Spec("/help", "list the commands"),
    "exit": _Spec("/exit", "leave the chat (also /quit, Ctrl-D)"),
    "quit": _Spec("/quit", "leave the chat"),
}


def help_event() -> ev.Help:
    """Every command with its usage and a one-line description."""
    return ev.Help(
        commands=[
            ev.CommandHelp(command=name, usage=spec.usage, description=spec.description)
            for name, spec in COMMANDS.items()
        ]
    )


def _usage(name: str) -> ev.Error:
    return ev.Error(code="usage", message=f"usage: {COMMANDS[name].usage}", req=name)


@dataclass(frozen=True)
class _Asked:
    """A request whose answer a later command may depend on."""

    req: str
    #: The room (join, part, who, history, topic) or the nickname (nick:
    #: the old one; away: ours).
    subject: str | None
    since: float

    def answered_by(self, event: ev.Event) -> bool:
        if isinstance(event, ev.Error):
            return event.req == self.req and (
                self.req not in ("join", "part", "history", "topic")
                or event.room in (None, self.subject)
            )
        match self.req, event:
            case "join", ev.Joined(room=room) | ev.Welcome(room=room):
                return room == self.subject
            case "part", ev.Parted(room=room):
                return room == self.subject
            case "history", ev.HistoryEnd(room=room):
                return room == self.subject
            case "who", ev.Who(room=room):
                return room == self.subject
            case "rooms", ev.Rooms():
                return True
            case "nick", ev.Nick(old=old):
                return old == self.subject
            case "topic", ev.Topic(room=room):
                return room == self.subject
            case "away", ev.Away(nick=nick, auto=False):
                return nick_key(nick) == nick_key(self.subject or "")
        return False


class InOrder:
    """Carries out commands in the order they were given (README "JSON mode").

    Requests such as ``/join`` are answered later, as events. A command given
    after them may depend on the answer (``/part ops`` after ``/join ops``,
    ``/history`` after ``/join``, a line after ``/part``), so :meth:`wait`
    holds the next command until every earlier request is answered. Chat lines
    are not waited for: the session keeps their order itself, and a line for a
    room being joined is held until the join is answered.

    Feed it every event the client yields (:meth:`seen`).
    """

    def __init__(self, timeout: float = REPLY_TIMEOUT) -> None:
        self.timeout = timeout
        self._asked: list[_Asked] = []
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def pending(self) -> int:
        """Requests not answered yet."""
        return len(self._asked)

    def asked(self, req: str, subject: str | None = None) -> None:
        """A request went out whose answer later commands wait for."""
        if any(a.req == req and a.subject == subject for a in self._asked) and req == "join":
            return  # the same room asked twice: the session sends one join
        self._asked.append(_Asked(req, subject, time.monotonic()))

    def seen(self, event: ev.Event) -> None:
        """An event from the client: it may answer a request."""
        if isinstance(event, ev.Message | ev.Private | ev.Join | ev.Leave):
            return  # the bulk of events; none answers a request
        for index, asked in enumerate(self._asked):
            if asked.answered_by(event):
                del self._asked[index]
                self._changed.set()
                return

    def close(self) -> None:
        """The session is over: nothing will be answered any more; stop waiting."""
        self._closed = True
        self._asked.clear()
        self._changed.set()

    async def wait(self, report: Callable[[ev.Event], None]) -> None:
        """Until every earlier request is answered. One not answered within
        :attr:`timeout` is given up with a ``no_answer`` error (to ``report``)."""
        while self._asked and not self._closed:
            oldest = self._asked[0]
            left = oldest.since + self.timeout - time.monotonic()
            if left <= 0:
                self._asked.pop(0)
                report(
                    ev.Error(
                        code="no_answer",
                        message=f"the broker did not answer /{oldest.req} within "
                        f"{self.timeout:g} s; carrying on with the next command",
                        req=oldest.req,
                        room=oldest.subject if oldest.req != "nick" else None,
                    )
                )
                continue
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)


async def execute(
    client: AsyncClient, line: str, order: InOrder | None = None
) -> list[ev.Event] | str:
    """Carry out one line typed by a user or a script.

    Returns :data:`EXIT` when the user asked to leave, otherwise the events to
    show at once (help, usage errors, refused input); answers from the broker
    arrive later as ordinary events. With ``order``, the requests sent are
    recorded there, so that the caller can make the next command wait for
    their answers (:class:`InOrder`).
    """
    return await _execute(client, line, order or InOrder())


async def _execute(client: AsyncClient, line: str, order: InOrder) -> list[ev.Event] | str:
    line = line.rstrip("\r\n")
    if not line.startswith("/") or line.startswith("//"):
        text = line[1:] if line.startswith("//") else line
        if not text.strip():
            return []  # an empty line: nothing to send, nothing to complain about
        return await _guard(client.say(text), "say", text)
    name, _, rest = line[1:].partition(" ")
    name = name.lower()
    rest = rest.strip()
    if name in ("exit", "quit"):
        return EXIT
    if name == "help":
        return [help_event()]
    if name not in COMMANDS:
        return [
            ev.Error(
                code="unknown_command",
                message=f"unknown command /{name}; /help lists them",
                req=name,
            )
        ]
    if name == "join":
        if not rest or " " in rest:
            return [_usage(name)]
        known = set(client.rooms)
        refused = await _guard(client.join(rest), name, line)
        if not refused and client.room not in known:
            order.asked("join", client.room)
        return refused
    if name == "part":
        before = client.room
        refused = await _guard(client.part(rest or None), name, line)
        if not refused:
            order.asked("part", _canonical(rest) if rest else before)
        return refused
    if name == "rooms":
        return _asked(order, "rooms", None, await _guard(client.list_rooms(), name, line))
    if name == "who":
        room = _canonical(rest) if rest else client.room
        return _asked(order, "who", room, await _guard(client.who(rest or None), name, line))
    if name == "me":
        return await _guard(client.action(rest), name, rest) if rest else [_usage(name)]
    if name == "nick":
        if not rest or " " in rest:
            return [_usage(name)]
        old = client.nick
        return _asked(order, "nick", old, await _guard(client.rename(rest), name, line))
    if name == "topic":
        room = client.room
        topic = None if not rest else "" if rest == "-" else rest
        return _asked(order, "topic", room, await _guard(client.topic(topic), name, line))
    if name in ("away", "back"):
        me = client.nick
        away = (rest or "away") if name == "away" else ""
        return _asked(order, "away", me, await _guard(client.away(away), name, line))
    if name == "msg":
        nick, _, text = rest.partition(" ")
        if not nick or not text.strip():
            return [_usage(name)]
        return await _guard(client.private(nick, text), name, text)
    # history
    if rest and not rest.isdigit():
        return [_usage(name)]
    count = int(rest) if rest else 50
    room = client.room
    refused = await _guard(client.history(max(1, min(count, 1000))), name, line)
    return _asked(order, "history", room, refused)


def _canonical(room: str) -> str | None:
    try:
        return validate_room(room)
    except ProtocolError:
        return None  # refused before anything is sent: nothing to wait for


def _asked(
    order: InOrder, req: str, subject: str | None, refused: list[ev.Event]
) -> list[ev.Event]:
    if not refused:
        order.asked(req, subject)
    return refused


async def _guard(operation: Awaitable[object], name: str, text: str) -> list[ev.Event]:
    """Run an operation; a refusal on our side becomes an error event that
    carries ``text`` (the line, or the command) so the user sees what was not sent."""
    try:
        await operation
    except ProtocolError as exc:
        return [ev.Error(code=exc.code, message=exc.message, req=name, text=text)]
    return []
