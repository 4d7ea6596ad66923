"""One room's line numbering on the client: the Clone pattern's sequencer with
gap repair as a small explicit state machine (docs/PROTOCOL.md §5.4).

A :class:`RoomTrack` takes the room's lines (live broadcasts and history
replies) and hands them on once each, in ``seq`` order. A line above
``last + 1`` waits in ``buffered`` while the gap below it is repaired from
the broker's history.

Repair states (``_REPAIR_MOVES``)::

    idle --gap seen--> asking --history reply--> idle (or asking the next chunk)
                         |  ^
                         |  +--timeout, tries left: ask again
                         +--timeout, no tries left--> idle, the range reported missed
    asking --connection lost--> idle (asked again once the room is rejoined)

The invariant (checked by :meth:`RoomTrack.stuck`): while connected, a
buffered line or a known gap always has a repair in flight; a repair always
ends, by a reply or by its deadline, and a range the broker cannot give is
reported as ``missed``. So a room never stops delivering.

Chunks are asked with ``forward: true`` and a range no wider than the chunk
(``before <= after + 1 + REPAIR_CHUNK``): a new broker returns the oldest
lines of the range, an old one that ignores ``forward`` returns the newest,
and in a range that fits the limit both are the whole range, so paging never
skips a line.

Numbering identity (shared contract §1): a non-empty ``epoch`` that differs
from the one held means the room's numbering restarted (:meth:`renumbered`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from client import events as ev
from protocol import ChatMessage, History, HistoryReply

__all__ = ["REPAIR_CHUNK", "REPAIR_TRIES", "RepairState", "RoomTrack", "as_event"]

#: Most lines asked for in one repair request.
REPAIR_CHUNK = 500
#: Times one chunk is asked for before its range is reported missed.
REPAIR_TRIES = 3


class RepairState(Enum):
    """Whether a repair request of this room is in flight."""

    IDLE = "idle"
    ASKING = "asking"


#: state -> what happened -> next state.
_REPAIR_MOVES: dict[RepairState, dict[str, RepairState]] = {
    RepairState.IDLE: {"gap": RepairState.ASKING, "lost": RepairState.IDLE},
    RepairState.ASKING: {
        "reply": RepairState.IDLE,
        "retry": RepairState.ASKING,
        "give_up": RepairState.IDLE,
        "lost": RepairState.IDLE,
        "refused": RepairState.IDLE,
    },
}


@dataclass
class RoomTrack:
    """Sequence tracking of one room we are in."""

    room: str
    last: int
    #: Lines at or below this number are replayed history, not live.
    history_until: int = 0
    #: Highest sequence number known to exist.
    known: int = 0
    #: Lowest sequence number shown; ``/history`` fetches below it.
    oldest: int = 0
    #: Identity of the numbering ("" until a broker names one).
    epoch: str = ""
    #: The newest seq the previous pong named (see :meth:`pong`).
    pong_target: int = 0
    buffered: dict[int, ChatMessage] = field(default_factory=dict)
    repair: RepairState = RepairState.IDLE
    #: The range ``(after, before)`` being repaired, its deadline and tries.
    asked: tuple[int, int] = (0, 0)
    deadline: float = 0.0
    tries: int = 0
    #: How many repair requests were made (tests and diagnostics).
    repairs: int = 0

    def _move(self, what: str) -> None:
        self.repair = _REPAIR_MOVES[self.repair][what]

    # --- input -------------------------------------------------------------

    def line(self, line: ChatMessage) -> list[ev.Event]:
        """A live line of this room."""
        if line.seq <= self.last:
            return []  # already delivered
        self.known = max(self.known, line.seq)
        if line.seq == self.last + 1:
            # In order: deliver it even while a repair is in flight (the
            # repair's answer skips what is delivered by then).
            self.last = line.seq
            return [as_event(line, history=line.seq <= self.history_until), *self._drain()]
        self.buffered[line.seq] = line
        return []

    def pong(self, seq: int) -> None:
        """A pong names ``seq`` as the room's newest. The pong travels on the
        DEALER and the lines on the SUB, so lines up to it may still be on
        their way: only what the previous pong named and has not come by now
        is missing (docs/PROTOCOL.md §5.2, "drain the SUB first")."""
        if self.pong_target > self.last:
            self.seen_known(self.pong_target)
        self.pong_target = seq

    def seen_known(self, seq: int) -> None:
        """The broker says the room's newest line is ``seq`` (pong, history, joined)."""
        self.known = max(self.known, seq)

    def history(self, reply: HistoryReply, request: History | None) -> list[ev.Event]:
        """The answer to our repair ``request`` (None: not known which)."""
        if (
            self.repair is not RepairState.ASKING
            or request is None
            or (request.after, request.before) != self.asked
            or not _answers(reply, *self.asked)
        ):
            # A late answer to a request given up or retried: its lines are
            # still good, but it says nothing about the range asked now.
            out: list[ev.Event] = []
            for line in reply.messages:
                out += self.line(line)
            return out
        out = []
        _, before = self.asked
        self._move("reply")
        self.tries = 0
        self.known = max(self.known, reply.seq)
        if reply.missed:
            out.append(ev.Missed(room=self.room, count=reply.missed))
        for line in reply.messages:
            if line.seq <= self.last:
                continue
            self.last = line.seq
            out.append(as_event(line, history=line.seq <= self.history_until))
        # What the range held and the broker did not return is gone: never ask
        # for it again (a reply short of its range would otherwise loop).
        end = min(before - 1, self.known)
        if self.last < end:
            if not reply.missed:
                out.append(ev.Missed(room=self.room, count=end - self.last))
            self.last = end
        return out + self._drain()

    def refused(self, now: float, *, retry_later: bool) -> None:
        """Our repair was refused: ask again after the deadline if throttled,
        else at once on the next poll."""
        if self.repair is not RepairState.ASKING:
            return
        if retry_later:
            return  # stays asking; the deadline asks again
        self._move("refused")

    def lost(self) -> None:
        """The connection is gone: the answer will never come."""
        self._move("lost")
        self.tries = 0

    def renumbered(self, seq: int, epoch: str, backlog_from: int) -> list[ev.Event]:
        """The room's numbering restarted (a new epoch): drop what we hold and
        continue from ``seq``; tells the user plainly."""
        lost = max(0, self.known - self.last)
        self.buffered.clear()
        self.repair = RepairState.IDLE
        self.tries = 0
        self.epoch = epoch
        self.last = backlog_from
        self.history_until = seq
        self.known = seq
        self.pong_target = 0
        self.oldest = backlog_from + 1
        return [ev.Missed(room=self.room, count=lost, reset=True)]

    # --- output ------------------------------------------------------------

    def poll(self, now: float, timeout: float) -> tuple[list[ev.Event], History | None]:
        """Events from a repair given up, and the history request to send now, if any."""
        out: list[ev.Event] = []
        if self.repair is RepairState.ASKING and self.last >= self.asked[1] - 1:
            # Live lines filled the range meanwhile: its answer (if it comes)
            # is a late one; go on with the next gap now.
            self._move("reply")
            self.tries = 0
        if self.repair is RepairState.ASKING:
            if now < self.deadline:
                return [], None
            if self.tries < REPAIR_TRIES:
                self._move("retry")
                return [], self._ask(now, timeout)
            # The broker never answered: report the range and move past it.
            self._move("give_up")
            self.tries = 0
            _, before = self.asked
            if before - 1 > self.last:
                out.append(ev.Missed(room=self.room, count=before - 1 - self.last))
                self.last = before - 1
            out += self._drain()
        gap_end = min(self.buffered) if self.buffered else self.known + 1
        if gap_end <= self.last + 1:
            return out, None
        before = min(gap_end, self.last + 1 + REPAIR_CHUNK)
        self.asked = (self.last, before)
        self.tries = 0
        self._move("gap")
        return out, self._ask(now, timeout)

    def stuck(self) -> bool:
        """Whether the invariant is broken: a gap or held line with no repair."""
        gap = bool(self.buffered) or self.known > self.last
        return gap and self.repair is RepairState.IDLE

    def _ask(self, now: float, timeout: float) -> History:
        self.tries += 1
        self.repairs += 1
        self.deadline = now + timeout
        after, before = self.asked
        return History(room=self.room, after=after, before=before, limit=REPAIR_CHUNK, forward=True)

    def _drain(self) -> list[ev.Event]:
        out: list[ev.Event] = []
        while True:
            line = self.buffered.pop(self.last + 1, None)
            if line is None:
                break
            self.last = line.seq
            out.append(as_event(line, history=line.seq <= self.history_until))
        for seq in [s for s in self.buffered if s <= self.last]:
            del self.buffered[seq]
        return out


def _answers(reply: HistoryReply, after: int, before: int) -> bool:
    """Whether ``reply`` can be the answer for the range ``(after, before)``:
    its lines lie in it, and it says something (lines, or some missed). A
    reply matched to the wrong request (one lost on the way shifts the
    order) must not make us skip lines as gone."""
    if not reply.messages:
        return reply.missed > 0
    return all(after < line.seq < before for line in reply.messages)


def as_event(line: ChatMessage, *, history: bool) -> ev.Message:
    """A stored or live line as the event a user sees."""
    return ev.Message(
        room=line.room,
        nick=line.nick,
        text=line.text,
        ts=line.ts,
        id=line.id,
        seq=line.seq,
        action=line.action,
        history=history,
    )
