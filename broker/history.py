"""Where the broker keeps each room's lines: the interface and the in-memory store.

The broker's loop calls :meth:`HistoryStore.flush` after each batch of requests
and before it publishes or acknowledges anything from that batch, so a line is
never seen by anyone before the store holds it (docs/PROTOCOL.md §8). A flush
that fails hands back the lines it could not store, and the loop refuses them
(``unavailable``) instead of publishing them: a store never raises out of
``flush``, and raises only :class:`StorageError` from a read.

Each store has an identity, its *epoch* (docs/PROTOCOL.md §5.4): a room's
numbering is the pair (epoch, seq), so a client can tell a history file that
was replaced or emptied from one that merely moved on. The SQLite store has
one epoch for all its rooms; a store shared by several brokers (a cluster) may
give each room its own, which is why the wire carries it per room.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Protocol

from protocol import Broadcast, ChatMessage

__all__ = ["HistoryStore", "MemoryHistory", "Published", "StorageError", "Unstored", "new_epoch"]

#: Lines a failed flush could not store, with their idempotency keys.
Unstored = list[tuple[ChatMessage, str | None]]
#: What the loop will publish to each room once a flush succeeds: the room's
#: broadcasts of the turn, in order, and the frames they were encoded into
#: (protocol.pack_messages). A store may keep those bytes rather than encode
#: the same lines again (protocol.join_frames).
Published = Mapping[str, tuple[Sequence[Broadcast], Sequence[bytes]]]


class StorageError(Exception):
    """The history store failed (disk full, I/O error, a damaged file); the
    message says what, for the log. Never raised for bad input."""


def new_epoch() -> str:
    """A fresh store identity: 16 random lowercase hex digits."""
    return secrets.token_hex(8)


class HistoryStore(Protocol):
    """Storage for the lines of every room."""

    #: The store's identity (informative, ``welcome.epoch``).
    epoch: str

    def room_epoch(self, room: str) -> str:
        """The epoch of ``room``'s numbering (the store's, for a single store)."""
        ...

    def last_seq(self, room: str) -> int:
        """The highest sequence number stored for ``room`` (0 if none), counting
        lines appended and not yet flushed."""
        ...

    def append(self, message: ChatMessage, key: str | None) -> None:
        """Add a line (buffered until :meth:`flush`)."""
        ...

    def flush(self, published: Published | None = None) -> Unstored:
        """Make every appended line durable. Returns the lines that could not be
        stored (empty when all went well): none of them is stored, and
        :meth:`last_seq` is back to what is. ``published``: what the loop
        will publish once this returns, encoded (may be used, never required)."""
        ...

    def fetch(
        self, room: str, after: int, before: int | None, limit: int, forward: bool = False
    ) -> tuple[list[ChatMessage], int]:
        """Lines with ``after < seq < before``, the newest ``limit`` of them (the
        oldest with ``forward``), in order, and how many lines of that range
        are gone (expired). Raises StorageError if the store cannot be read."""
        ...

    def recent_keys(self, count: int) -> list[tuple[str, ChatMessage]]:
        """The idempotency keys of the newest lines, oldest first, to rebuild the
        broker's de-duplication table after a restart."""
        ...

    def close(self) -> None:
        """Flush and release the store."""
        ...


class MemoryHistory:
    """Keeps the newest ``per_room`` lines of each room in memory only; a new
    epoch each time, since nothing survives the process."""

    def __init__(self, per_room: int = 1000) -> None:
        self._per_room = per_room
        self._rooms: dict[str, deque[ChatMessage]] = {}
        self._last_seq: dict[str, int] = {}
        self.epoch = new_epoch()

    def room_epoch(self, room: str) -> str:
        return self.epoch

    def last_seq(self, room: str) -> int:
        return self._last_seq.get(room, 0)

    def append(self, message: ChatMessage, key: str | None) -> None:
        lines = self._rooms.get(message.room)
        if lines is None:
            lines = self._rooms[message.room] = deque(maxlen=self._per_room)
        lines.append(message)
        self._last_seq[message.room] = message.seq

    def flush(self, published: Published | None = None) -> Unstored:
        """Nothing to do: memory is as durable as this store gets."""
        return []

    def fetch(
        self, room: str, after: int, before: int | None, limit: int, forward: bool = False
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
            kept = kept[:limit] if forward else kept[-limit:]
        return kept, missed

    def recent_keys(self, count: int) -> list[tuple[str, ChatMessage]]:
        return []

    def close(self) -> None:
        self._rooms.clear()
