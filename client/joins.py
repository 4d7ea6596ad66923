"""Rooms being joined, first or again (docs/PROTOCOL.md §5.1, §5.3).

A room is *being joined* from the moment its topic is subscribed until its
``joined`` reply (or the refusal) arrives. Its broadcasts are held meanwhile
and handed over with the ``joined``: a reply and a broadcast travel on
different sockets, so a line published just after the join can overtake
the ``joined``, and must not be sequenced before the room's numbering is
known. The same holds for every room of a rejoin after a reconnect, which is
what keeps a restart free of duplicates.
"""

from __future__ import annotations

from protocol import Broadcast

__all__ = ["PREJOIN_LIMIT", "Joins"]

#: Broadcasts held for a room whose ``joined`` has not arrived yet.
PREJOIN_LIMIT = 10_000


class Joins:
    """Rooms being joined, their held broadcasts and sync numbers."""

    def __init__(self) -> None:
        self._held: dict[str, list[Broadcast]] = {}
        # Rooms we were in and are joining again after a reconnect.
        self._again: set[str] = set()
        self._sync = 0
        # room -> the sync number its join used, to unsubscribe once joined
        self._sync_of: dict[str, int] = {}

    def begin(self, room: str) -> int | None:
        """Start joining ``room``; returns the new sync number for its ``join``
        (None: it is being joined already)."""
        if room in self._held:
            return None
        self._sync += 1
        self._held[room] = []
        self._sync_of[room] = self._sync
        return self._sync

    def expect(self, rooms: list[str], *, again: set[str]) -> None:
        """A welcome: ``rooms`` are joined at the sync; ``again`` of them are
        rooms we were in (a rejoin after a reconnect)."""
        self._again = set(again)
        for room in rooms:
            self._held.setdefault(room, [])

    def hold(self, message: Broadcast) -> bool:
        """Keep ``message`` if its room is being joined; returns whether it was."""
        held = self._held.get(message.room)
        if held is None:
            return False
        if len(held) < PREJOIN_LIMIT:
            held.append(message)
        return True

    def done(self, room: str) -> tuple[list[Broadcast], bool, int | None]:
        """``room`` is joined: its held broadcasts, whether it was a rejoin,
        and the sync number to unsubscribe (None: the hello's)."""
        again = room in self._again
        self._again.discard(room)
        return self._held.pop(room, []), again, self._sync_of.pop(room, None)

    def refused(self, room: str) -> bool:
        """The join of ``room`` was refused; returns whether it was a rejoin."""
        again = room in self._again
        self._again.discard(room)
        self._held.pop(room, None)
        self._sync_of.pop(room, None)
        return again

    def rejoining(self, room: str) -> bool:
        """Whether ``room`` is one we were in and are joining again."""
        return room in self._again

    def lost(self) -> None:
        """The connection is gone: every join starts over with the rejoin."""
        self._held.clear()
        self._again.clear()
        self._sync_of.clear()

    def __contains__(self, room: object) -> bool:
        return room in self._held

    def __bool__(self) -> bool:
        return bool(self._held or self._again)
