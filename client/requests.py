"""Requests waiting for their answer: every one gets it, or an error.

Replies carry no request id, but the broker answers one connection's requests
in order, so the oldest pending request of the reply's kind (and room) is the
one answered (FIFO, as docs/PROTOCOL.md §3 promises per connection).

A pending request's life (``_MOVES``)::

    sent --answer or error--> answered (a completion for the front-end)
    sent --connection lost--> waiting --rejoined--> sent (resent as it was)
    sent --socket full------> waiting --next tick--> sent
    sent --no answer in time, or the session ends--> failed (an error event)

Joins are not resent: the rooms being joined go into the rejoin's ``hello``
and their ``joined`` answers the pending join. Repair requests belong to the
room sequencers (client/sequencer.py), which have deadlines of their own; a
lost repair is simply dropped here.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from enum import Enum

from client import events as ev
from protocol import Away, History, Join, ListRooms, Part, Rename, Request, Topic, Who

__all__ = ["NO_ANSWER", "REQUEST_TIMEOUT", "Pending", "Purpose", "RequestTracker"]

#: The local error code of a request the broker never answered.
NO_ANSWER = "no_answer"
#: Seconds a request may go unanswered while connected (at least; a join may
#: wait for its sync up to the broker's client timeout).
REQUEST_TIMEOUT = 30.0

Tracked = Join | Part | Rename | Who | ListRooms | History | Topic | Away


class Purpose(Enum):
    """Who asked: the user (answered with a completion) or a room's repair."""

    USER = "user"
    REPAIR = "repair"
    #: The session's own (setting our away message again after a rejoin):
    #: tracked only so that its answer is not taken for a user request's.
    RESTORE = "restore"


class Step(Enum):
    """Where a pending request is."""

    SENT = "sent"
    WAITING = "waiting"


_MOVES: dict[Step, dict[str, Step]] = {
    Step.SENT: {"lost": Step.WAITING, "not_sent": Step.WAITING, "retry": Step.WAITING},
    Step.WAITING: {"lost": Step.WAITING, "resend": Step.SENT, "not_sent": Step.WAITING},
}


@dataclass
class Pending:
    """One request waiting for its answer."""

    id: int
    request: Tracked
    purpose: Purpose
    sent_at: float
    step: Step = Step.SENT
    #: While waiting: not resent before this time.
    retry_at: float = 0.0

    @property
    def kind(self) -> str:
        """The request's wire type (what an error's ``req`` echoes)."""
        return _KIND[type(self.request)]

    @property
    def room(self) -> str | None:
        """The room the request names, if any."""
        return getattr(self.request, "room", None)

    def move(self, what: str) -> None:
        self.step = _MOVES[self.step][what]


_KIND: dict[type, str] = {
    Join: "join",
    Part: "part",
    Rename: "nick",
    Who: "who",
    ListRooms: "rooms",
    History: "history",
    Topic: "topic",
    Away: "away",
}


class RequestTracker:
    """Pending requests, matched to their answers in order."""

    def __init__(self, *, timeout: float = REQUEST_TIMEOUT) -> None:
        #: Seconds a request may wait for its answer while connected.
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._pending: list[Pending] = []
        self._completions: list[tuple[int, ev.Event]] = []

    def add(
        self, request: Tracked, now: float, purpose: Purpose = Purpose.USER, *, queued: bool = False
    ) -> int:
        """Track ``request``, sent now (or ``queued`` to be: its wait for an
        answer starts at :meth:`sent`); returns its id."""
        pending = Pending(next(self._ids), request, purpose, math.inf if queued else now)
        self._pending.append(pending)
        return pending.id

    def sent(self, request: Request, now: float) -> None:
        """A queued ``request`` left now: its wait for an answer starts."""
        for pending in self._pending:
            if pending.request is request:
                pending.sent_at = now

    def answered(
        self, kind: str, room: str | None, *, setting: bool | None = None
    ) -> Pending | None:
        """The oldest pending request of ``kind`` (for ``room``, when the answer
        names one) that the answer just received belongs to; removed.

        ``setting`` tells a topic's answers apart: asking is answered by the
        reply ``topic``, setting by our own broadcast ``topic``, on another
        socket, so the two may come in either order."""
        for i, pending in enumerate(self._pending):
            if pending.kind != kind or (room is not None and pending.room not in (room, None)):
                continue
            request = pending.request
            if isinstance(request, Topic) and setting not in (None, request.text is not None):
                continue
            return self._pending.pop(i)
        return None

    def waiting(self, kind: str) -> bool:
        """Whether a user request of ``kind`` is pending."""
        return any(p.kind == kind and p.purpose is Purpose.USER for p in self._pending)

    def complete(self, pending: Pending | None, event: ev.Event) -> None:
        """Record what answered a user request, for the front-end's waiters."""
        if pending is not None and pending.purpose is Purpose.USER:
            self._completions.append((pending.id, event))

    def take_completions(self) -> list[tuple[int, ev.Event]]:
        """(request id, the event that answered it), each once."""
        out, self._completions = self._completions, []
        return out

    def lost(self) -> None:
        """The connection is gone: repairs are dropped (their rooms ask again),
        user requests wait to be resent after the rejoin."""
        self._pending = [p for p in self._pending if p.purpose is Purpose.USER]
        for pending in self._pending:
            pending.move("lost")
            # A join is not resent: its room goes into the rejoin's hello.
            pending.retry_at = math.inf if isinstance(pending.request, Join) else 0.0

    def later(self, pending: Pending, when: float) -> None:
        """Send ``pending`` again from ``when`` on (it was refused as
        ``syncing``: the session is still joining); it keeps its place."""
        pending.move("retry")
        pending.retry_at = when
        self._pending.insert(0, pending)

    def not_sent(self, request: Request, when: float) -> None:
        """The socket could not take ``request``: send it again from ``when`` on."""
        for pending in self._pending:
            if pending.request is request:
                pending.move("not_sent")
                pending.retry_at = when

    def resend(self, now: float) -> list[Tracked]:
        """The waiting requests due now, to send again (joins cut off by a lost
        connection excepted: the caller joins those rooms again by itself)."""
        out: list[Tracked] = []
        for pending in self._pending:
            if pending.step is Step.WAITING and pending.retry_at <= now:
                pending.move("resend")
                pending.sent_at = now
                out.append(pending.request)
        return out

    def joins_waiting(self) -> list[str]:
        """Rooms of user joins not answered yet."""
        return [p.request.room for p in self._pending if isinstance(p.request, Join)]

    def expired(self, now: float) -> list[ev.Event]:
        """Fail the user requests unanswered for :attr:`timeout` while connected."""
        out: list[ev.Event] = []
        keep: list[Pending] = []
        for pending in self._pending:
            if pending.step is Step.SENT and now > pending.sent_at + self.timeout:
                if pending.purpose is Purpose.USER:
                    out.append(self._fail(pending, NO_ANSWER, "the broker never answered"))
                continue
            keep.append(pending)
        self._pending = keep
        return out

    def give_up(self, reason: str) -> list[ev.Event]:
        """Fail every user request still pending (the session is ending)."""
        out = [
            self._fail(p, "not_delivered", reason)
            for p in self._pending
            if p.purpose is Purpose.USER
        ]
        self._pending.clear()
        return out

    def busy(self) -> bool:
        """Whether a user request is unanswered."""
        return any(p.purpose is Purpose.USER for p in self._pending)

    def __len__(self) -> int:
        return len(self._pending)

    def _fail(self, pending: Pending, code: str, message: str) -> ev.Event:
        event = ev.Error(code=code, message=message, req=pending.kind, room=pending.room)
        self.complete(pending, event)
        return event
