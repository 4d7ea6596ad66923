"""Glue between the bus reader, the relay and the engine (docs/CLUSTER.md "Bus").

The broker's loop will own one :class:`Follower`: when the reader's socket is
readable it calls :meth:`Follower.pump`, and once a second
:meth:`Follower.check` (the stale-bus check: a meta read for every followed
room, pipelined). Both return what to send to local clients, in order.
"""

from __future__ import annotations

from collections import deque

from broker.engine.api import Engine, EngineUnavailable, RoomMeta
from broker.engine.bus import (
    Bell,
    BusDown,
    BusEvent,
    BusLines,
    BusNotice,
    BusReader,
    BusUp,
    Subscribed,
)
from broker.engine.relay import Deliver, NeedMeta, NeedRange, Relay, RelayAction, Reset

__all__ = ["Follower", "Output"]

#: What the loop relays or acts on: lines, resets, notices, inbox bells, bus state.
Output = Deliver | Reset | BusNotice | Bell | BusUp | BusDown


class Follower:
    """Follows rooms on the bus and repairs every gap from the engine."""

    def __init__(self, engine: Engine, reader: BusReader, *, page: int = 1000) -> None:
        self.engine = engine
        self.reader = reader
        self.relay = Relay()
        self._page = page
        #: Followed rooms whose bus subscription is confirmed (Subscribed).
        self._live: set[str] = set()

    def follow(self, room: str, start: RoomMeta | None = None) -> None:
        """Follow a room (its first local member joined), relaying every line
        after ``start`` (see :meth:`Relay.follow`)."""
        self.relay.follow(room, start)
        self.reader.subscribe(room)
        self._live.discard(room)

    def unfollow(self, room: str) -> None:
        """Stop following a room (its last local member left)."""
        self.relay.unfollow(room)
        self.reader.unsubscribe(room)
        self._live.discard(room)

    def live(self, room: str) -> bool:
        """Whether the bus brings the room's messages published from now on
        (its subscription confirmed; not while the bus is down)."""
        return room in self._live

    def pump(self) -> list[Output]:
        """Handle every bus event waiting now."""
        return self.handle(self.reader.events())

    def handle(self, events: list[BusEvent]) -> list[Output]:
        """Handle bus events; engine reads for catch-up happen here."""
        out: list[Output] = []
        for event in events:
            if isinstance(event, BusLines):
                self._run(self.relay.on_lines(event.room, event.epoch, event.lines), out)
            elif isinstance(event, Subscribed):
                if event.room in self.relay.rooms():
                    self._live.add(event.room)
                self._run(self.relay.on_subscribed(event.room), out)
            else:
                if isinstance(event, BusDown):
                    self._live.clear()
                # BusUp, BusDown, Bell, BusNotice: for the loop. After a
                # reconnect every room's Subscribed comes first and starts
                # its catch-up.
                out.append(event)
        return out

    def check(self) -> list[Output]:
        """The periodic stale-bus check: compare every room's meta with what
        was relayed and repair (a lost bus message, a silent bus)."""
        out: list[Output] = []
        rooms = self.relay.rooms()
        if rooms:
            self._run([NeedMeta(rooms)], out)
        return out

    def _run(self, actions: list[RelayAction], out: list[Output]) -> None:
        todo = deque(actions)
        while todo:
            action = todo.popleft()
            if isinstance(action, Deliver | Reset):
                if isinstance(action, Deliver):
                    self.engine.saw(action.room, RoomMeta(action.lines[-1].seq, action.epoch))
                out.append(action)
                continue
            try:
                if isinstance(action, NeedMeta):
                    metas = self.engine.meta(action.rooms)
                    for room, meta in metas.items():
                        todo.extend(self.relay.on_meta(room, meta))
                else:
                    history = self.engine.fetch(
                        action.room, action.after, action.before, self._page, forward=True
                    )
                    todo.extend(self.relay.on_range(action.room, history))
            except EngineUnavailable:
                # the next check() or bus event tries again
                if isinstance(action, NeedRange):
                    self.relay.abandon(action.room)
