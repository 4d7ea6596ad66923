"""The pure catch-up logic between the bus and the broker's XPUB
(docs/CLUSTER.md "The bus inside one poll loop").

:class:`Relay` takes bus events and engine replies in and gives actions out,
as the broker core does: per followed room it relays lines in seq order
exactly once, asks for the missing range when a bus message skips seqs,
takes a meta snapshot after every (re)subscription (subscribe first, then
snapshot: zguide's Clone pattern), and announces a new epoch as a reset,
never renumbering silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from broker.engine.api import History, RoomMeta, StoredLine

__all__ = ["Deliver", "NeedMeta", "NeedRange", "Relay", "RelayAction", "Reset"]


@dataclass(frozen=True, slots=True)
class Deliver:
    """Relay these lines of a room to local subscribers, in this order."""

    room: str
    epoch: str
    lines: tuple[StoredLine, ...]


@dataclass(frozen=True, slots=True)
class Reset:
    """The room's numbering restarted (new epoch): tell the room's clients."""

    room: str
    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class NeedMeta:
    """Read these rooms' meta and call :meth:`Relay.on_meta`."""

    rooms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NeedRange:
    """Fetch the room's lines ``after < seq < before`` (forward) and call
    :meth:`Relay.on_range`."""

    room: str
    after: int
    before: int


RelayAction = Deliver | Reset | NeedMeta | NeedRange


@dataclass
class _Track:
    epoch: str = ""
    last: int = -1  # -1: no snapshot yet
    held: dict[int, StoredLine] = field(default_factory=dict)
    held_epoch: str = ""
    fetch_before: int = 0  # > 0 while a NeedRange is out


class Relay:
    """Per followed room: relay each line once, in seq order, repairing gaps."""

    def __init__(self) -> None:
        self._rooms: dict[str, _Track] = {}

    def follow(self, room: str, start: RoomMeta | None = None) -> None:
        """Start following (subscribe on the bus too); lines wait for a snapshot.

        ``start``: relay every line after it (the numbering the broker told its
        joining client), so the snapshot repairs what came before the bus was
        live instead of skipping it.
        """
        track = self._rooms.setdefault(room, _Track())
        if start is not None and track.last < 0:
            track.epoch, track.last = start.epoch, start.seq

    def unfollow(self, room: str) -> None:
        """Stop following a room."""
        self._rooms.pop(room, None)

    def last(self, room: str) -> RoomMeta | None:
        """The last seq relayed for a room, and its epoch (None before the snapshot)."""
        track = self._rooms.get(room)
        if track is None or track.last < 0:
            return None
        return RoomMeta(track.last, track.epoch)

    def rooms(self) -> tuple[str, ...]:
        """The rooms followed."""
        return tuple(self._rooms)

    def on_subscribed(self, room: str) -> list[RelayAction]:
        """The bus is live for the room (first time or again): snapshot it."""
        return [NeedMeta((room,))] if room in self._rooms else []

    def on_meta(self, room: str, meta: RoomMeta) -> list[RelayAction]:
        """A meta snapshot (after subscribing, or a periodic stale-bus check)."""
        track = self._rooms.get(room)
        if track is None:
            return []
        if track.last < 0:
            if track.held_epoch != meta.epoch:
                track.held.clear()
            track.epoch, track.last = meta.epoch, meta.seq
            return self._drain(room, track)
        if meta.epoch != track.epoch:
            return self._reset(room, track, meta.epoch, meta.seq)
        if meta.seq > track.last and not track.fetch_before:
            track.fetch_before = meta.seq + 1
            return [NeedRange(room, track.last, meta.seq + 1)]
        return []

    def on_lines(self, room: str, epoch: str, lines: Sequence[StoredLine]) -> list[RelayAction]:
        """Lines from the bus."""
        track = self._rooms.get(room)
        if track is None or not lines:
            return []
        if track.last < 0:  # before the snapshot: hold them
            if epoch != track.held_epoch:
                track.held.clear()
                track.held_epoch = epoch
            track.held.update((line.seq, line) for line in lines)
            return []
        actions: list[RelayAction] = []
        if epoch != track.epoch:
            actions += self._reset(room, track, epoch, lines[0].seq - 1)
        for line in lines:
            if line.seq > track.last:
                track.held[line.seq] = line
        return actions + self._drain(room, track)

    def on_range(self, room: str, history: History) -> list[RelayAction]:
        """The lines a NeedRange asked for. Lines below the first one returned
        are gone from the engine (trimmed): they are skipped here, and clients
        learn of them as ``missed`` when they repair from history."""
        track = self._rooms.get(room)
        if track is None:
            return []
        before, track.fetch_before = track.fetch_before, 0
        if history.meta.epoch != track.epoch:
            return self._reset(room, track, history.meta.epoch, history.meta.seq)
        lines = [line for line in history.lines if line.seq > track.last]
        first = lines[0].seq if lines else before
        if history.missed or not lines:
            track.last = max(track.last, first - 1)
        for line in lines:
            track.held.setdefault(line.seq, line)
        return self._drain(room, track)

    def abandon(self, room: str) -> None:
        """A NeedRange could not be served; a later event or check asks again."""
        track = self._rooms.get(room)
        if track is not None:
            track.fetch_before = 0

    def _reset(self, room: str, track: _Track, epoch: str, seq: int) -> list[RelayAction]:
        """A new numbering whose newest seq is ``seq``. Its lines above the
        last one relayed are still relayed (after a failover that lost lines
        the new epoch continues above every seq seen: docs/CLUSTER.md
        "Failover"); the clients learn of the reset from the room's epoch."""
        start = min(track.last, seq)
        track.epoch, track.last, track.fetch_before = epoch, start, 0
        track.held.clear()  # lines of the old numbering
        actions: list[RelayAction] = [Reset(room, epoch, start)]
        if seq > start:
            track.fetch_before = seq + 1
            actions.append(NeedRange(room, start, seq + 1))
        return actions

    def _drain(self, room: str, track: _Track) -> list[RelayAction]:
        ready: list[StoredLine] = []
        for seq in sorted(track.held):
            if seq <= track.last:
                del track.held[seq]
            elif seq == track.last + 1:
                ready.append(track.held.pop(seq))
                track.last = seq
            else:
                break
        actions: list[RelayAction] = [Deliver(room, track.epoch, tuple(ready))] if ready else []
        if track.held and not track.fetch_before:
            track.fetch_before = min(track.held)
            actions.append(NeedRange(room, track.last, track.fetch_before))
        return actions
