"""The rooms we are in, for the session core (client/session.py): one
sequencer each (client/sequencer.py), the joins under way (client/joins.py)
and who is in them (client/membership.py), kept in step with the
subscriptions (docs/PROTOCOL.md §5.1, §5.4).

A room becomes ours at its ``joined`` (its numbering is known then) and
stops being ours at its ``parted``, or when a rejoin is refused. Repairs go
out only while the session is joined (:attr:`client.outgoing.Outgoing.open`):
while reconnecting, the rejoin's ``joined`` tells where each room stands.
"""

from __future__ import annotations

from client import events as ev
from client.joins import Joins
from client.membership import Membership
from client.outgoing import Outgoing
from client.requests import Pending, Purpose
from client.sequencer import RoomTrack, as_event
from protocol import Broadcast, History, HistoryReply, Joined, Pong, room_topic, sync_topic

__all__ = ["Rooms"]


class Rooms:
    """Our rooms' sequencers, the joins under way and the members."""

    def __init__(self, sending: Outgoing, *, backlog: int, repair_timeout: float) -> None:
        self.sending = sending
        #: Lines of history shown when joining a room.
        self.backlog = max(0, backlog)
        #: How long a repair request may go unanswered (the session sets it
        #: from the broker's heartbeat).
        self.repair_timeout = repair_timeout
        #: room -> its sequencer, in joining order.
        self.tracks: dict[str, RoomTrack] = {}
        #: The highest seq an ``ack`` gave one of our lines, per room: the
        #: broadcast of it may come later (in cluster mode after a trip
        #: through Redis), and a front-end leaving should show it first.
        #: (With the room's epoch then: a renumbered room forgets it.)
        self.acked: dict[str, tuple[str, int]] = {}
        self.joins = Joins()
        self.membership = Membership()

    def __contains__(self, room: object) -> bool:
        """Whether we are in ``room`` (its ``joined`` came)."""
        return room in self.tracks

    def names(self) -> list[str]:
        """Rooms we are in, in joining order."""
        return list(self.tracks)

    @property
    def repairs(self) -> int:
        """How many repair requests were made."""
        return sum(track.repairs for track in self.tracks.values())

    # --- joining -------------------------------------------------------------

    def begin(self, room: str, token: str | None) -> int | None:
        """Start joining ``room`` on its own (``/join``): subscribe to it and to
        the join's sync topic; returns the join's sync number (None: it is
        being joined already)."""
        sync = self.joins.begin(room)
        if sync is not None:
            self.sending.subscribe(room_topic(room))
            self._subscribe_sync(token, sync)
        return sync

    def expect(self, rooms: list[str], token: str | None) -> None:
        """A welcome: ``rooms`` are joined at its sync. Their broadcasts are
        held until their ``joined``, for a room we were in as for a new one: a
        broadcast can overtake the ``joined`` (issue 12, item 1)."""
        self.joins.expect(rooms, again={name for name in rooms if name in self.tracks})
        for name in rooms:
            self.sending.subscribe(room_topic(name))
        self._subscribe_sync(token, 0)

    def hello_rooms(self, wanted: list[str], joins_waiting: list[str]) -> list[str]:
        """The rooms a (re)join's ``hello`` names: ours (the ``wanted`` ones
        before the first welcome) and those of joins not answered yet."""
        ours = list(self.tracks) or wanted
        return list(dict.fromkeys(ours + joins_waiting))

    def joined(
        self,
        reply: Joined,
        *,
        token: str | None,
        restarted: bool,
        me: str = "",
        grace: float = 0.0,
        now: float = 0.0,
    ) -> tuple[list[ev.Event], list[Broadcast], bool]:
        """The room of ``reply`` is ours now (``restarted``: the broker is a new
        one, whose members may still be coming back for ``grace`` seconds).
        Returns the events of a numbering reset and of who came and went
        meanwhile, the broadcasts held until now, and whether it was a rejoin
        after a reconnect."""
        name = reply.room
        waiting, again, sync = self.joins.done(name)
        out: list[ev.Event] = self.membership.joined(
            name, list(reply.members), me, again=again, grace=grace if restarted else None, now=now
        )
        track = self.tracks.get(name)
        if track is None:
            start = max(0, reply.seq - self.backlog)
            self.tracks[name] = RoomTrack(
                room=name,
                last=start,
                history_until=reply.seq,
                known=reply.seq,
                oldest=start + 1,
                epoch=reply.epoch,
            )
        elif _renumbered(track, reply.epoch, reply.seq, restarted):
            out += track.renumbered(reply.seq, reply.epoch, reply.seq)
        else:
            track.epoch = track.epoch or reply.epoch
            track.seen_known(reply.seq)  # a lower seq is reordering, never a reset
        if token is not None and sync is not None:
            # Unsubscribing the sync topic keeps the broker's subscription table small.
            self.sending.subscribe(sync_topic(token, sync), on=False)
        return out, waiting, again

    def refused(self, room: str) -> bool:
        """The join of ``room`` was refused; returns whether that matters (False:
        e.g. a stale join's ``sync_timeout`` for a room we are in)."""
        if room in self.tracks and not self.joins.rejoining(room):
            return False
        if self.joins.refused(room):
            self.tracks.pop(room, None)  # the restarted broker refused it
        self.sending.subscribe(room_topic(room), on=False)
        return True

    def ours_acked(self, room: str | None, seq: int) -> None:
        """One of our lines in ``room`` was stored as ``seq``."""
        track = self.tracks.get(room) if room is not None else None
        if track is not None and room is not None and seq > 0:
            epoch, before = self.acked.get(room, (track.epoch, 0))
            self.acked[room] = (track.epoch, max(seq, before if epoch == track.epoch else 0))

    def caught_up(self) -> bool:
        """Whether every line of ours that was acknowledged has been shown."""
        return all(
            (track := self.tracks.get(room)) is None or track.epoch != epoch or track.last >= seq
            for room, (epoch, seq) in self.acked.items()
        )

    def parted(self, room: str) -> None:
        """We left ``room``."""
        self.tracks.pop(room, None)
        self.acked.pop(room, None)
        self.membership.left(room)
        self.sending.subscribe(room_topic(room), on=False)

    def lost(self) -> None:
        """The connection is gone: repairs end, joins start over with the rejoin."""
        for track in self.tracks.values():
            track.lost()
        self.joins.lost()

    # --- lines -----------------------------------------------------------------

    def pong(self, reply: Pong, now: float) -> list[ev.Event]:
        """The newest line of each room, as a pong names it: repair what we
        lack; a new epoch restarts the room's numbering (contract §1)."""
        out: list[ev.Event] = []
        for name, seq in reply.seqs.items():
            track = self.tracks.get(name)
            if track is None or name in self.joins:
                continue
            epoch = reply.epochs.get(name, "")
            if track.epoch and epoch and epoch != track.epoch:
                out += track.renumbered(seq, epoch, seq)
                continue
            track.epoch = track.epoch or epoch
            track.pong(seq)
            out += self.poll(name, now)
        return out

    def history(self, reply: HistoryReply, pending: Pending | None, now: float) -> list[ev.Event]:
        """A history answer: to the user's ``/history`` (the lines, then a
        ``history_end``) or to a repair (``pending``: the request it answers)."""
        name = reply.room
        requests = self.sending.requests
        user = pending is not None and pending.purpose is Purpose.USER
        track = self.tracks.get(name)
        if track is None or name in self.joins:
            if user:
                requests.complete(pending, ev.HistoryEnd(room=name, count=0))
            return []
        out: list[ev.Event] = []
        if track.epoch and reply.epoch and reply.epoch != track.epoch:
            # The lines answer a numbering we no longer follow (or the reverse).
            out += track.renumbered(reply.seq, reply.epoch, reply.seq)
            if user:
                end = ev.HistoryEnd(room=name, count=0)
                requests.complete(pending, end)
                out.append(end)
            return out
        if user:
            lines: list[ev.Event] = [as_event(m, history=True) for m in reply.messages]
            if reply.messages:
                track.oldest = min(track.oldest, reply.messages[0].seq)
            # A marker, so a reader knows the fetch is over (and an empty one
            # is not mistaken for a lost answer).
            end = ev.HistoryEnd(room=name, count=len(reply.messages))
            requests.complete(pending, end)
            return [*lines, end]
        asked = pending.request if pending is not None else None
        out += track.history(reply, asked if isinstance(asked, History) else None)
        return out + self.poll(name, now)

    def older(self, room: str, count: int) -> History:
        """The request for ``count`` lines of ``room`` older than any shown."""
        return History(room=room, before=self.tracks[room].oldest, limit=count)

    # --- repair ------------------------------------------------------------------

    def poll(self, name: str, now: float) -> list[ev.Event]:
        """Events of ``name``'s repair given up, and its next repair request sent."""
        track = self.tracks.get(name)
        if track is None or name in self.joins or not self.sending.open:
            return []
        out, request = track.poll(now, self.repair_timeout)
        if request is not None:
            self.sending.repair(request, now)
        return out

    def poll_all(self, now: float) -> list[ev.Event]:
        """:meth:`poll` for every room we are in."""
        out: list[ev.Event] = []
        for name in list(self.tracks):
            out += self.poll(name, now)
        return out

    def _subscribe_sync(self, token: str | None, number: int) -> None:
        if token is not None:
            self.sending.subscribe(sync_topic(token, number))


def _renumbered(track: RoomTrack, epoch: str, seq: int, restarted: bool) -> bool:
    """Whether a rejoin's numbering is not the one we follow (contract §1)."""
    if epoch and track.epoch:
        return epoch != track.epoch
    if not epoch and not track.epoch:
        # An old broker names no epoch: only a restarted one (a new id)
        # with fewer lines than we saw can have lost its history. Broadcasts
        # are held until joined, so this is no reordering.
        return restarted and seq < track.last
    return False
