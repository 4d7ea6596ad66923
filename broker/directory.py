"""Nicknames and sessions beyond this broker: one part of the broker's core.

The core's :class:`~broker.sessions.SessionTable` keeps this broker's
sessions and nicknames. :class:`Directory` is what the core asks of the rest
of the chat: whether a nickname free here is free everywhere (claim and
release it), where a nickname lives when not here (for a private line), and
a session's record, so that its client can resume on another broker. One
broker alone is the whole chat: :class:`LocalDirectory` answers from nothing.
Cluster mode: :class:`~broker.cluster_parts.EngineDirectory`.
"""

from __future__ import annotations

from typing import Protocol

from broker.sessions import Session
from protocol import Hello

__all__ = ["Directory", "LocalDirectory"]


class Directory(Protocol):
    """Nicknames and sessions of the whole chat, as the core uses them."""

    def claim(self, nick: str, token: str) -> bool:
        """Reserve ``nick`` (free on this broker) for the session ``token``
        everywhere; False if another broker's session holds it."""
        ...

    def release(self, nick: str, token: str) -> None:
        """Free ``nick`` if ``token`` holds it."""
        ...

    def adopt(self, hello: Hello, nick: str, peer: str | None) -> str | None:
        """The token of a session another broker held that ``hello`` resumes
        (its nickname and rooms come with it), or None: a new session."""
        ...

    def locate(self, nick: str) -> tuple[str, str] | None:
        """(broker, session token) of a nickname held on another broker."""
        ...

    def save(self, session: Session) -> None:
        """Keep ``session``'s record (nickname, rooms) for a resume elsewhere."""
        ...

    def drop(self, session: Session) -> None:
        """``session`` ended: free its nickname and forget its record."""
        ...


class LocalDirectory:
    """The directory of a broker that is the whole chat: nothing beyond it."""

    def claim(self, nick: str, token: str) -> bool:
        return True

    def release(self, nick: str, token: str) -> None:
        return None

    def adopt(self, hello: Hello, nick: str, peer: str | None) -> str | None:
        return None

    def locate(self, nick: str) -> tuple[str, str] | None:
        return None

    def save(self, session: Session) -> None:
        return None

    def drop(self, session: Session) -> None:
        return None
