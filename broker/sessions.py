"""The broker's table of sessions: one place that keeps its three indices in step.

A session is found by the ROUTER identity its requests come from, by its
nickname (case-folded, ``protocol.nick_key``: at most one session per
nickname) and by its token (a ``resume`` and the sync topics name it). Every
change goes through :class:`SessionTable`, so the invariant holds: a session
is in all three indices or in none, under its current identity and nickname.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from broker.ratelimit import TokenBucket
from protocol import nick_key

__all__ = ["Session", "SessionTable"]


@dataclass(slots=True, eq=False)
class Session:
    """One client's session: its connection, nickname, rooms and limits."""

    identity: bytes
    nick: str
    token: str
    last_seen: float
    active: bool = False
    rooms: set[str] = field(default_factory=set)
    # sync number -> (rooms waiting for it, when asked)
    pending: dict[int, tuple[list[str], float]] = field(default_factory=dict)
    #: Made only when a sync overtakes its join (rare): an empty set per
    #: session would cost 216 bytes (docs/PERFORMANCE.md, memory).
    early_syncs: set[int] | None = None
    #: The CURVE public key (ZAP User-Id) of the connection that said hello,
    #: or None without CURVE: requests from any other key are refused.
    peer: str | None = None
    #: Flood control of lines, joins, parts and renames (anything that publishes).
    flood: TokenBucket = field(default_factory=lambda: TokenBucket(0, 1))
    #: Flood control of history, who and room-list requests.
    queries: TokenBucket = field(default_factory=lambda: TokenBucket(0, 1))
    #: The away message ("" : here), and the tokens of those already told it
    #: after a private line (docs/PROTOCOL.md "Away": once per away); the set
    #: is made when first needed (an empty one costs 216 bytes a session).
    away: str = ""
    away_told: set[str] | None = None


class _Keyed(Protocol):
    identity: bytes
    nick: str
    token: str


S = TypeVar("S", bound=_Keyed)


class SessionTable(Generic[S]):
    """Sessions by identity, nickname and token."""

    def __init__(self) -> None:
        #: ROUTER identity -> session. Read directly on the hot path (one dict
        #: lookup per request); changed only through this table's methods.
        self.by_identity: dict[bytes, S] = {}
        self._by_nick: dict[str, S] = {}
        self._by_token: dict[str, S] = {}

    def __len__(self) -> int:
        return len(self.by_identity)

    def __iter__(self) -> Iterator[S]:
        """Every session (a snapshot: the table may change while iterating)."""
        return iter(list(self.by_identity.values()))

    def with_token(self, token: str) -> S | None:
        """The session with this token, if any."""
        return self._by_token.get(token)

    def with_nick(self, nick: str) -> S | None:
        """The session holding this nickname (case-insensitive), if any."""
        return self._by_nick.get(nick_key(nick))

    def add(self, session: S) -> None:
        """A new session; its nickname must be free."""
        self.by_identity[session.identity] = session
        self._by_nick[nick_key(session.nick)] = session
        self._by_token[session.token] = session

    def rebind(self, session: S, identity: bytes) -> None:
        """The same session on a new connection (a resume)."""
        del self.by_identity[session.identity]
        session.identity = identity
        self.by_identity[identity] = session

    def rename(self, session: S, nick: str) -> None:
        """Give a session a new nickname; the new one must be free (or its own)."""
        del self._by_nick[nick_key(session.nick)]
        self._by_nick[nick_key(nick)] = session
        session.nick = nick

    def remove(self, session: S) -> None:
        """Forget a session (it may already be gone)."""
        self.by_identity.pop(session.identity, None)
        self._by_token.pop(session.token, None)
        if self._by_nick.get(nick_key(session.nick)) is session:
            del self._by_nick[nick_key(session.nick)]

    def clear(self) -> None:
        """Forget every session."""
        self.by_identity.clear()
        self._by_nick.clear()
        self._by_token.clear()
