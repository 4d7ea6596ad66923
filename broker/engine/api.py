"""What the broker needs from a storage and sequencing engine (docs/CLUSTER.md).

The broker core decides; an engine stores, numbers and shares. One engine is
shared by every broker of a cluster, so everything that must be one thing for
the whole chat lives here: each room's numbering (epoch, seq) and history,
idempotency keys, nickname leases, room membership, the registry of live
brokers, and an inbox per broker for private lines.

Errors (the whole tree)::

    EngineError
    ├── EngineUnavailable   retryable: unreachable, timed out, loading, busy
    ├── Fenced              this broker's lease expired: it must stop writing
    └── EngineConfigError   the engine's settings are unsafe (start-up check)

A write that raised :class:`EngineUnavailable` with ``indeterminate`` false
did not happen. With ``indeterminate`` true (a timeout, a connection lost
after the request left) it may have happened: resend the same lines with the
same keys, which the engine de-duplicates, before telling anybody anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "AppendResult",
    "Duplicate",
    "Engine",
    "EngineConfigError",
    "EngineError",
    "EngineUnavailable",
    "Fenced",
    "History",
    "InboxLine",
    "Member",
    "NewLine",
    "ReapReport",
    "ReapedMember",
    "RoomMeta",
    "SessionRecord",
    "StoredLine",
]


class EngineError(Exception):
    """Base class of everything an engine raises on purpose."""


class EngineUnavailable(EngineError):
    """The engine cannot serve the request now; retry later (code ``unavailable``).

    ``indeterminate`` is true when a write may have taken effect (a timeout
    or a connection lost after sending): resend it with the same keys.
    """

    def __init__(self, message: str, *, indeterminate: bool = False) -> None:
        super().__init__(message)
        self.indeterminate = indeterminate


class Fenced(EngineError):
    """This broker's lease in the registry expired (or it was reaped).

    Its writes are refused so that a broker paused past its lease cannot act
    as a ghost after another broker reaped its members and nicknames. It must
    drop its sessions and register again under a new id.
    """


class EngineConfigError(EngineError):
    """The engine's settings would lose data silently (checked at start)."""


@dataclass(frozen=True, slots=True)
class NewLine:
    """A line to append: its idempotency key (None: no de-duplication) and the
    opaque payload the broker wants back in history and on the bus.

    A line without a key cannot be de-duplicated, so after an indeterminate
    failure it may be stored without an ack: brokers should give every line a
    key (their own, e.g. ``!<broker>-<n>``, where the client sent none).
    """

    key: str | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class StoredLine:
    """A line of a room's history: its seq and payload."""

    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Line ``index`` of a batch carried a key the room already had: it was
    not stored again; ``seq`` is the seq of the original line and ``payload``
    the original's payload as stored (so that the resend gets the original
    ack), None when the engine no longer has it (trimmed from history)."""

    index: int
    seq: int
    payload: bytes | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The outcome of one room's batch.

    ``seqs[i]`` is line i's seq (the original's for a duplicate); ``epoch``
    the room's numbering they belong to. ``confirmed`` is false when the
    engine was asked to wait for replicas (``EngineSettings.replicas``) and
    not enough confirmed in time: the lines are stored on the primary (and
    published) but may be lost in a failover, so they must not be
    acknowledged yet; a resend with the same keys asks again.
    """

    epoch: str
    seqs: tuple[int, ...]
    duplicates: tuple[Duplicate, ...] = ()
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class RoomMeta:
    """A room's numbering: the last seq assigned and the epoch it belongs to."""

    seq: int
    epoch: str


@dataclass(frozen=True, slots=True)
class History:
    """A range of a room's lines, in seq order, how many of the range are gone
    (trimmed), and the room's numbering at the time of reading."""

    lines: tuple[StoredLine, ...]
    missed: int
    meta: RoomMeta


@dataclass(frozen=True, slots=True)
class Member:
    """A member of a room; members are listed in joining order."""

    nick_key: str
    nick: str
    broker: str
    session: str


@dataclass(frozen=True, slots=True)
class ReapedMember:
    """A member of a dead broker removed by the reaper: announce its leave."""

    room: str
    member: Member


@dataclass(frozen=True, slots=True)
class ReapReport:
    """What one reaping of a dead broker removed (each reported exactly once)."""

    broker: str
    members: tuple[ReapedMember, ...]
    nicks: tuple[str, ...]
    sessions: tuple[str, ...] = ()  # tokens no longer resumable


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What another broker needs to take a session over when its client
    resumes there (docs/PROTOCOL.md §5.3): the token is the session id."""

    token: str
    broker: str
    nick: str
    nick_key: str
    rooms: tuple[str, ...]
    key: str = ""  # the client's CURVE public key (Z85), if bound


@dataclass(frozen=True, slots=True)
class InboxLine:
    """A private line (or other payload) sent to this broker's inbox."""

    id: str
    payload: bytes


class Engine(Protocol):
    """Storage, sequencing and coordination shared by the brokers of a cluster.

    Every method may raise :class:`EngineUnavailable`; every write may raise
    :class:`Fenced`. Room names are the protocol's canonical names; nickname
    keys are case-folded (``protocol.nick_key``). Methods block for at most
    the engine's timeout; the broker calls them from its one loop.
    """

    @property
    def broker_id(self) -> str:
        """This broker's id in the registry (random, new for each register)."""
        ...

    def register(self) -> None:
        """Enter the registry of live brokers under :attr:`broker_id`."""
        ...

    def renew_id(self) -> None:
        """Take a new broker id (after Fenced: the old one stays dead); then
        :meth:`register` again."""
        ...

    def heartbeat(self) -> None:
        """Renew this broker's lease; raises Fenced if it already expired."""
        ...

    def append(
        self, batches: Mapping[str, Sequence[NewLine]]
    ) -> dict[str, AppendResult | EngineUnavailable]:
        """Append each room's lines, in order, in one round trip for all rooms.

        Per room, atomically: lines whose key the room has are reported as
        duplicates, the others get the next seqs, are stored and are published
        on the room's bus in one bus message. A room whose batch failed maps
        to its (retryable) error and nothing of it was written; the other
        rooms' results stand. Raises Fenced (nothing written), or
        EngineUnavailable when the whole call failed.
        """
        ...

    def fetch(
        self, room: str, after: int, before: int | None, limit: int, *, forward: bool = False
    ) -> History:
        """Lines with ``after < seq < before``: the newest ``limit`` of them, or
        the oldest ``limit`` with ``forward`` (paging forward from ``after``)."""
        ...

    def meta(self, rooms: Sequence[str]) -> dict[str, RoomMeta]:
        """Each room's numbering (a room never seen gets its epoch now)."""
        ...

    def saw(self, room: str, meta: RoomMeta) -> None:
        """The broker relayed a room's lines up to ``meta`` (from the bus): the
        engine passes the highest seq seen as a floor, so that a Redis that
        lost acknowledged lines (a failover) starts a new epoch instead of
        numbering new lines with seqs clients saw (docs/CLUSTER.md "Failover")."""
        ...

    def publish(self, room: str, payload: bytes) -> None:
        """Publish a notice (join, leave, rename) on a room's bus; not stored."""
        ...

    def claim_nick(self, nick_key: str, session: str) -> bool:
        """Take a nickname lease for a session of this broker; False if someone
        else holds it. Taking one's own again is a success."""
        ...

    def refresh_nicks(self, leases: Mapping[str, str]) -> list[str]:
        """Renew this broker's leases (nick_key → session); returns the nick
        keys now held by somebody else (the session lost its nickname)."""
        ...

    def release_nick(self, nick_key: str, session: str) -> bool:
        """Give a lease up if this session holds it; True if it did."""
        ...

    def nick_holder(self, nick_key: str) -> tuple[str, str] | None:
        """The (broker, session) holding a nickname, if anybody does: where a
        private line to that nick must go."""
        ...

    def join(self, room: str, member: Member, notice: bytes | None = None) -> bool:
        """Add a member (of this broker) to a room and publish ``notice`` if it
        is new; False if it already was a member (then nothing is published)."""
        ...

    def leave(self, room: str, member: Member, notice: bytes | None = None) -> bool:
        """Remove a member if this very session holds it, publishing ``notice``."""
        ...

    def members(self, room: str) -> list[Member]:
        """A room's members across the cluster, in joining order."""
        ...

    def rooms(self) -> dict[str, int]:
        """Every room with members across the cluster, and how many each has."""
        ...

    def dead_brokers(self) -> list[str]:
        """Brokers whose lease expired and who are not reaped yet."""
        ...

    def reap(self, broker: str) -> ReapReport | None:
        """Remove a dead broker's members and nicknames; None when another
        reaper has it (or had it). Safe to call again after a crash."""
        ...

    def save_session(self, record: SessionRecord) -> None:
        """Store (or update, after a join or leave) a session of this broker."""
        ...

    def refresh_sessions(self, tokens: Sequence[str]) -> list[str]:
        """Renew this broker's session records; returns the tokens it lost
        (taken over by another broker, or gone)."""
        ...

    def take_session(self, token: str) -> SessionRecord | None:
        """Take a session over from whichever broker has it, with its
        nickname lease and room memberships (joining order kept, no notices);
        None when no such session exists any more (reaped, expired, dropped)."""
        ...

    def drop_session(self, token: str) -> bool:
        """Forget a session of this broker (bye, timeout); True if it did."""
        ...

    def send_private(self, broker: str, payload: bytes) -> str:
        """Append a payload to another broker's inbox and ring its bell."""
        ...

    def read_inbox(self, after: str, count: int = 100) -> list[InboxLine]:
        """This broker's inbox entries after id ``after`` ("0-0": all)."""
        ...

    def close(self) -> None:
        """Release connections (the registry entry expires on its own)."""
        ...
