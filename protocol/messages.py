"""Every message of protocol v1, as frozen typed structs (docs/PROTOCOL.md §4-5).

Three families, one per direction and socket:

* ``Request``: client DEALER -> broker ROUTER.
* ``Reply``: broker ROUTER -> one client's DEALER (private).
* ``Broadcast``: broker PUB -> every SUB subscribed to a room's topic.

On the wire each is one JSON object whose ``type`` field names the struct.
Unknown fields are ignored, so later minor versions can add fields.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "PROTOCOL_VERSION",
    "Ack",
    "Away",
    "AwayNotice",
    "AwayReply",
    "Broadcast",
    "Bye",
    "ChatMessage",
    "Error",
    "Goodbye",
    "Hello",
    "History",
    "HistoryReply",
    "Join",
    "JoinNotice",
    "Joined",
    "JoinsNotice",
    "LeaveNotice",
    "Limits",
    "ListRooms",
    "NickNotice",
    "Part",
    "Parted",
    "Ping",
    "Pong",
    "PrivateMessage",
    "Rename",
    "Renamed",
    "Reply",
    "Request",
    "RoomInfo",
    "RoomList",
    "Say",
    "SendPrivate",
    "Shutdown",
    "Topic",
    "TopicNotice",
    "TopicReply",
    "Welcome",
    "Who",
    "WhoReply",
]

PROTOCOL_VERSION = 1


class _Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    """Base of all wire messages; ``type`` is the tag."""


# --- requests: client -> broker ---------------------------------------------


class Hello(_Message, tag="hello", frozen=True):
    """Ask to join with a nickname; ``resume`` carries an earlier session token."""

    v: int
    nick: str
    rooms: list[str] = msgspec.field(default_factory=lambda: ["lobby"])
    resume: str | None = None


class Say(_Message, tag="say", frozen=True):
    """A chat line for a room the sender is in; ``action`` marks a /me line."""

    room: str
    text: str
    action: bool = False
    key: str | None = None


class SendPrivate(_Message, tag="msg", frozen=True):
    """A private line to one nickname, delivered over the ROUTER only."""

    to: str
    text: str
    action: bool = False
    key: str | None = None


class Join(_Message, tag="join", frozen=True):
    """Join a room; completes once ``sync/<session>/<sync>/`` is subscribed."""

    room: str
    sync: int


class Part(_Message, tag="part", frozen=True):
    """Leave one room."""

    room: str


class Rename(_Message, tag="nick", frozen=True):
    """Change nickname."""

    nick: str


class Who(_Message, tag="who", frozen=True):
    """List the members of a room."""

    room: str


class ListRooms(_Message, tag="rooms", frozen=True):
    """List the rooms that have members, with member counts."""


class History(_Message, tag="history", frozen=True):
    """Ask for stored lines of a room: sequence numbers in ``[after+1, before-1]``."""

    room: str
    after: int = 0
    before: int | None = None
    limit: int = 50
    #: With ``limit``: the oldest ``limit`` lines of the range (page forward
    #: from ``after``) instead of the newest.
    forward: bool = False


class Ping(_Message, tag="ping", frozen=True):
    """Heartbeat: the broker answers with ``pong``."""


class Bye(_Message, tag="bye", frozen=True):
    """Leave the chat: the broker answers ``goodbye`` and tells your rooms."""


class Topic(_Message, tag="topic", frozen=True):
    """Ask for a room's topic (``text`` absent) or set it (``""`` clears it);
    docs/PROTOCOL.md "Room topics"."""

    room: str
    text: str | None = None


class Away(_Message, tag="away", frozen=True):
    """Mark yourself away with ``text`` as the reason, or back with ``""``
    (docs/PROTOCOL.md "Away")."""

    text: str = ""


Request = (
    Hello
    | Say
    | SendPrivate
    | Join
    | Part
    | Rename
    | Who
    | ListRooms
    | History
    | Ping
    | Bye
    | Topic
    | Away
)

# --- replies: broker -> one client -------------------------------------------


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """The limits the broker enforces, sent in the welcome."""

    text_bytes: int
    nick_length: int
    room_length: int
    rooms_per_client: int
    frame_bytes: int
    #: Flood control: sustained lines per second (0 = unlimited) and burst size.
    rate: float = 0.0
    burst: int = 0


class Welcome(_Message, tag="welcome", frozen=True):
    """Nickname reserved; subscribe on ``pub`` and then to the hello sync topic."""

    v: int
    nick: str
    session: str
    pub: str
    broker: str
    heartbeat: float
    timeout: float
    limits: Limits
    #: The identity of the broker's history store (informative; rooms carry
    #: theirs in ``joined``, ``history`` and ``pong``, docs/PROTOCOL.md §5.4).
    epoch: str = ""


class Joined(_Message, tag="joined", frozen=True):
    """You are now a member of ``room``; ``seq`` is its latest sequence number."""

    room: str
    seq: int
    members: list[str]
    #: The numbering ``seq`` belongs to: when it differs from the one a client
    #: holds for the room, the room's numbering restarted (§5.4).
    epoch: str = ""
    #: The room's topic ("" when none; docs/PROTOCOL.md "Room topics").
    topic: str = ""
    #: Members who are away: nickname -> their away message (PROTOCOL.md "Away").
    away: dict[str, str] = msgspec.field(default_factory=dict)


class Parted(_Message, tag="parted", frozen=True):
    """You have left ``room``."""

    room: str


class Renamed(_Message, tag="renamed", frozen=True):
    """Your nickname changed from ``old`` to ``new``."""

    old: str
    new: str


class WhoReply(_Message, tag="who", frozen=True):
    """Members of a room."""

    room: str
    members: list[str]
    #: Members who are away: nickname -> their away message (PROTOCOL.md "Away").
    away: dict[str, str] = msgspec.field(default_factory=dict)


class RoomInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One row of a room list."""

    room: str
    members: int


class RoomList(_Message, tag="rooms", frozen=True):
    """Rooms with at least one member."""

    rooms: list[RoomInfo]


class PrivateMessage(_Message, tag="private", frozen=True):
    """A private line, delivered to its recipient and echoed to its sender."""

    nick: str
    to: str
    text: str
    ts: float
    id: str
    action: bool = False
    key: str | None = None


class Ack(_Message, tag="ack", frozen=True):
    """A line carrying ``key`` was accepted (``seq`` is 0 for private lines)."""

    key: str
    id: str
    room: str | None = None
    seq: int = 0


class Error(_Message, tag="error", frozen=True):
    """A request failed; ``code`` is stable, ``message`` is for people."""

    code: str
    message: str
    req: str | None = None
    key: str | None = None
    room: str | None = None


class Pong(_Message, tag="pong", frozen=True):
    """Heartbeat answer with the latest sequence number of each of your rooms."""

    broker: str
    seqs: dict[str, int]
    #: room -> the epoch of its numbering (§5.4).
    epochs: dict[str, str] = msgspec.field(default_factory=dict)


class ChatMessage(_Message, tag="message", frozen=True):
    """A chat line in a room, stamped by the broker (also a Broadcast)."""

    room: str
    nick: str
    text: str
    ts: float
    id: str
    seq: int
    action: bool = False


class HistoryReply(_Message, tag="history", frozen=True):
    """Stored lines of a room in sequence order; ``missed`` counts expired ones."""

    room: str
    messages: list[ChatMessage]
    missed: int = 0
    seq: int = 0
    epoch: str = ""


class Shutdown(_Message, tag="shutdown", frozen=True):
    """The broker is going away."""

    reason: str


class Goodbye(_Message, tag="goodbye", frozen=True):
    """Answer to ``bye``: the session is over and the nickname free."""


class TopicReply(_Message, tag="topic", frozen=True):
    """A room's topic, who set it and when (``""``, ``""`` and 0 when it has none)."""

    room: str
    text: str
    nick: str = ""
    ts: float = 0.0


class AwayReply(_Message, tag="away", frozen=True):
    """``nick`` is away with ``text`` ("" : back). Answers your own ``away``
    request, and comes once after a private line to someone who is away."""

    nick: str
    text: str


Reply = (
    Welcome
    | Joined
    | Parted
    | Renamed
    | WhoReply
    | RoomList
    | PrivateMessage
    | Ack
    | Error
    | Pong
    | HistoryReply
    | Shutdown
    | Goodbye
    | TopicReply
    | AwayReply
)

# --- broadcasts: broker PUB -> room subscribers ------------------------------


class JoinNotice(_Message, tag="join", frozen=True):
    """``nick`` joined ``room``."""

    room: str
    nick: str
    ts: float


class JoinsNotice(_Message, tag="joins", frozen=True):
    """Everyone in ``nicks`` (two or more, in the order they joined) joined
    ``room`` at the same moment: a join storm, announced once instead of once
    per person."""

    room: str
    nicks: list[str]
    ts: float


class LeaveNotice(_Message, tag="leave", frozen=True):
    """``nick`` left ``room``; reason is exit, part or timeout (docs/PROTOCOL.md §5)."""

    room: str
    nick: str
    reason: str
    ts: float


class NickNotice(_Message, tag="nick", frozen=True):
    """``old`` is now ``new``; sent once per shared room with the same ``id``."""

    room: str
    old: str
    new: str
    ts: float
    id: str


class TopicNotice(_Message, tag="topic", frozen=True):
    """``nick`` set the topic of ``room`` to ``text`` ("" : cleared)."""

    room: str
    text: str
    nick: str
    ts: float


class AwayNotice(_Message, tag="away", frozen=True):
    """``nick``, a member of ``room``, is away with ``text`` ("" : back)."""

    room: str
    nick: str
    text: str
    ts: float


Broadcast = (
    ChatMessage | JoinNotice | JoinsNotice | LeaveNotice | NickNotice | TopicNotice | AwayNotice
)
