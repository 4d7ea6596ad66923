"""Where the broker keeps each room's lines: the interface and the in-memory store.

The broker's loop calls :meth:`HistoryStore.flush` after each batch of requests
and before it publishes or acknowledges anything from that batch, so a line is
never seen by anyone before the store holds it (docs/PROTOCOL.md §8).
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from protocol import ChatMessage

__all__ = ["HistoryStore", "MemoryHistory"]


class HistoryStore(Protocol):
    """Storage for the lines of every room."""

    def last_seq(self, room: str) -> int:
        """The highest sequence number stored for ``room`` (0 if none)."""
        ...

    def append(self, message: ChatMessage, key: str | None) -> None:
        """Add a line (buffered until :meth:`flush`)."""
        ...

    def flush(self) -> None:
        """Make every appended line durable."""
        ...

    def fetch(
        self, room: str, after: int, before: int | None, limit: int
    ) -> tuple[list[ChatMessage], int]:
        """Lines with ``after < seq < before``, the newest ``limit`` of them, in
        order, and how many lines of that range are gone (expired)."""
        ...

    def recent_keys(self, count: int) -> list[tuple[str, ChatMessage]]:
        """The idempotency keys of the newest lines, oldest first, to rebuild the
        broker's de-duplication table after a restart."""
        ...

    def close(self) -> None:
        """Flush and release the store."""
        ...


class MemoryHistory:
    """Keeps the newest ``per_room`` lines of each room in memory only."""

    def __init__(self, per_room: int = 1000) -> None:
        self._per_room = per_room
        self._rooms: dict[str, deque[ChatMessage]] = {}
        self._last_seq: dict[str, int] = {}

    def last_seq(self, room: str) -> int:
        return self._last_seq.get(room, 0)

    def append(self, message: ChatMessage, key: str | None) -> None:
        lines = self._rooms.get(message.room)
        if lines is None:
            lines = self._rooms[message.room] = deque(maxlen=self._per_room)
        lines.append(message)
        self._last_seq[message.room] = message.seq

    def flush(self) -> None:
        """Nothing to do: memory is as durable as this store gets."""

    def fetch(
        self, room: str, after: int, before: int | None, limit: int
    ) -> tuple[list[ChatMessage], int]:
        last = self._last_seq.get(room, 0)
        upper = last + 1 if before is None else min(before, last + 1)
        if upper <= after + 1 or limit <= 0:
            return [], 0
        lines = self._rooms.get(room, deque())
        kept = [m for m in lines if after < m.seq < upper]
        oldest_kept = lines[0].seq if lines else upper
        missed = max(0, min(oldest_kept, upper) - (after + 1))
        if len(kept) > limit:
            kept = kept[-limit:]
        return kept, missed

    def recent_keys(self, count: int) -> list[tuple[str, ChatMessage]]:
        return []

    def close(self) -> None:
        self._rooms.clear()
