"""The slash commands shared by the interactive client and ``--json`` mode.

A line that does not start with ``/`` is a chat line for the current room; a
line starting with ``//`` sends the rest, starting with one ``/``, as text.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass

from client import events as ev
from client.aio import AsyncClient
from protocol import ProtocolError

__all__ = ["COMMANDS", "EXIT", "execute", "help_event"]

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


async def execute(client: AsyncClient, line: str) -> list[ev.Event] | str:
    """Carry out one line typed by a user or a script.

    Returns :data:`EXIT` when the user asked to leave, otherwise the events to
    show at once (help, usage errors, refused input); answers from the broker
    arrive later as ordinary events.
    """
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
        return (
            await _guard(client.join(rest), name, line)
            if rest and " " not in rest
            else [_usage(name)]
        )
    if name == "part":
        return await _guard(client.part(rest or None), name, line)
    if name == "rooms":
        return await _guard(client.list_rooms(), name, line)
    if name == "who":
        return await _guard(client.who(rest or None), name, line)
    if name == "me":
        return await _guard(client.action(rest), name, rest) if rest else [_usage(name)]
    if name == "nick":
        return (
            await _guard(client.rename(rest), name, line)
            if rest and " " not in rest
            else [_usage(name)]
        )
    if name == "topic":
        if not rest:
            return await _guard(client.topic(), name, line)
        return await _guard(client.topic("" if rest == "-" else rest), name, line)
    if name == "away":
        return await _guard(client.away(rest or "away"), name, line)
    if name == "back":
        return await _guard(client.away(""), name, line)
    if name == "msg":
        nick, _, text = rest.partition(" ")
        if not nick or not text.strip():
            return [_usage(name)]
        return await _guard(client.private(nick, text), name, text)
    # history
    if rest and not rest.isdigit():
        return [_usage(name)]
    count = int(rest) if rest else 50
    return await _guard(client.history(max(1, min(count, 1000))), name, line)


async def _guard(operation: Awaitable[object], name: str, text: str) -> list[ev.Event]:
    """Run an operation; a refusal on our side becomes an error event that
    carries ``text`` (the line, or the command) so the user sees what was not sent."""
    try:
        await operation
    except ProtocolError as exc:
        return [ev.Error(code=exc.code, message=exc.message, req=name, text=text)]
    return []
