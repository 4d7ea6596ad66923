"""What a client sees: typed events, one struct per kind (README "JSON mode").

Each event encodes to the JSON object the ``--json`` mode prints, ``type``
first. The same structs are what ``Client`` and ``AsyncClient`` yield.
"""

from __future__ import annotations

import re

import msgspec

__all__ = [
    "Away",
    "CommandHelp",
    "Connection",
    "Error",
    "Event",
    "Help",
    "HistoryEnd",
    "Join",
    "Joined",
    "Leave",
    "Message",
    "Missed",
    "Nick",
    "Parted",
    "Private",
    "RoomCount",
    "Rooms",
    "Shutdown",
    "Topic",
    "Welcome",
    "Who",
    "encode_event",
]


class _Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    pass


class Welcome(_Event, tag="welcome", frozen=True):
    """We are in: our nickname and the current room."""

    nick: str
    room: str
    rooms: list[str]
    members: list[str]
    #: The room's topic ("" when none).
    topic: str = ""


class Message(_Event, tag="message", frozen=True):
    """A line in a room; ``history`` marks replayed stored lines."""

    room: str
    nick: str
    text: str
    ts: float
    id: str
    seq: int
    action: bool = False
    history: bool = False


class Join(_Event, tag="join", frozen=True):
    """Someone joined one of our rooms; ``meanwhile``: while we were away (seen
    when we rejoined after a reconnect; ``ts`` is then when we noticed)."""

    room: str
    nick: str
    ts: float
    meanwhile: bool = False


class Leave(_Event, tag="leave", frozen=True):
    """Someone left one of our rooms: ``exit``, ``part``, ``timeout``...;
    ``meanwhile``: while we were away (gone when we rejoined after a
    reconnect; ``reason`` is then ``unknown``, ``ts`` when we noticed)."""

    room: str
    nick: str
    reason: str
    ts: float
    meanwhile: bool = False


class Private(_Event, tag="private", frozen=True):
    """A private line (to us, or our own copy of one we sent)."""

    nick: str
    to: str
    text: str
    ts: float
    id: str
    action: bool = False


class Nick(_Event, tag="nick", frozen=True):
    """Someone (maybe we) changed nickname."""

    old: str
    new: str


class Joined(_Event, tag="joined", frozen=True):
    """We joined a further room (it is now the current one)."""

    room: str
    members: list[str]
    #: The room's topic ("" when none).
    topic: str = ""


class Parted(_Event, tag="parted", frozen=True):
    """We left a room."""

    room: str


class Who(_Event, tag="who", frozen=True):
    """Members of a room; ``away`` maps those who are away to their message."""

    room: str
    members: list[str]
    away: dict[str, str] = msgspec.field(default_factory=dict)


class RoomCount(msgspec.Struct, frozen=True, kw_only=True):
    """One room and how many are in it."""

    room: str
    members: int


class Rooms(_Event, tag="rooms", frozen=True):
    """Rooms that have members."""

    rooms: list[RoomCount]


class Missed(_Event, tag="missed", frozen=True):
    """``count`` lines of ``room`` are gone from the broker's history.

    With ``reset``, the room's numbering restarted (the broker lost its
    history, shared contract §1): ``count`` is how many lines we knew of and
    never saw, and the lines that follow are new ones."""

    room: str
    count: int
    reset: bool = False


class HistoryEnd(_Event, tag="history_end", frozen=True):
    """The end of the older lines ``/history`` asked for: ``count`` came (0: none left)."""

    room: str
    count: int


class Error(_Event, tag="error", frozen=True):
    """A request of ours failed, or a line could not be delivered."""

    code: str
    message: str
    req: str | None = None
    room: str | None = None
    text: str | None = None
    #: The key ``say``/``private`` returned, when the failed request was a line.
    key: str | None = None


class Connection(_Event, tag="connection", frozen=True):
    """The link to the broker changed: ``reconnecting``, ``waiting_for_nick``
    or ``reconnected``.

    ``reconnected`` comes every time the session was re-established, however
    quickly; ``restarted`` says whether it is a new broker (its id changed:
    sessions and memberships were rebuilt) rather than our own connection;
    ``moved`` that another broker of the cluster resumed the session whole
    (a failover: same session, nickname and rooms; ``restarted`` is false).
    Either way ``broker`` is the id of the broker that holds the session now.
    ``waiting_for_nick``: the rejoin was refused because our old session still
    holds the nickname; the client keeps trying for up to ``wait`` seconds,
    until that session must have timed out, and only then gives up.
    With several broker endpoints (brokers of one cluster), ``endpoint``
    names the broker's ROUTER endpoint: the one lost (``reconnecting``), the
    one failed over to (``reconnected``); with one it is empty.
    ``auth_failed``: while reconnecting, the broker at ``endpoint`` (always
    set) refused our key (``message`` says how); the client goes on trying
    the other endpoints. With none left it gives up with an ``auth_failed``
    error instead (docs/SECURITY.md).
    ``shutdown``: this ``reconnecting`` is because of the ``shutdown`` event
    just before it (the broker said it is going; nothing was lost)."""

    state: str
    restarted: bool = False
    wait: float = 0.0
    endpoint: str = ""
    moved: bool = False
    broker: str = ""
    message: str = ""
    shutdown: bool = False


class CommandHelp(msgspec.Struct, frozen=True, kw_only=True):
    """One command: how to type it and what it does."""

    command: str
    usage: str
    description: str


class Help(_Event, tag="help", frozen=True):
    """The answer to ``/help``."""

    commands: list[CommandHelp]


class Shutdown(_Event, tag="shutdown", frozen=True):
    """The broker is shutting down; ``moving``: there are other brokers of the
    cluster to move to (several endpoints), so the session moves on at once
    rather than waiting for this one to come back. The ``connection``
    ``reconnecting`` event that follows has ``shutdown`` set."""

    reason: str
    moving: bool = False


class Topic(_Event, tag="topic", frozen=True):
    """A room's topic: set by ``nick`` at ``ts`` ("" : none). ``changed`` is
    true when someone just set it, false when it is an answer to ``/topic``."""

    room: str
    text: str
    nick: str = ""
    ts: float = 0.0
    changed: bool = False


class Away(_Event, tag="away", frozen=True):
    """``nick`` is away with ``text`` ("" : back). ``auto`` marks the answer
    to a private line we sent to someone away (once per away)."""

    nick: str
    text: str
    auto: bool = False


Event = (
    Welcome
    | Message
    | Join
    | Leave
    | Private
    | Nick
    | Joined
    | Parted
    | Who
    | Rooms
    | Missed
    | HistoryEnd
    | Error
    | Connection
    | Help
    | Shutdown
    | Topic
    | Away
)

_encoder = msgspec.json.Encoder()


# Characters JSON lets through raw that still act on a terminal or split a
# line for some readers: DEL, the C1 controls, the line and paragraph
# separators, and the bidirectional overrides and isolates (in UTF-8).
_UNSAFE_IN_JSON = re.compile(rb"\x7f|\xc2[\x80-\x9f]|\xe2\x80[\xa8-\xae]|\xe2\x81[\xa6-\xa9]")


def _as_json_escape(match: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % ord(match.group().decode("utf-8"))


def encode_event(event: Event) -> bytes:
    """The event as one line of JSON (no newline), with every control
    character, line separator and bidi control written as a ``\\uXXXX`` escape."""
    return _UNSAFE_IN_JSON.sub(_as_json_escape, _encoder.encode(event))
