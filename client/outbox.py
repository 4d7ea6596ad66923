"""Every line the user sent, from ``say``/``private`` until the broker
acknowledges it or the user is told it was not delivered
(docs/PROTOCOL.md §5.5, §6).

A line's states (``_LINE_MOVES``)::

    held --released--> queued --token--> sent --ack--> (gone)
      ^                  ^                 |
      |                  +--resend timer---+  (same key: the broker drops repeats)
      |                  +--rate_limited---+  (its bucket was emptier than ours)
      +-----connection lost / syncing------+
    any --given up (closed, refused)--> (gone, reported ``not_delivered`` or the error)

*held*: typed while reconnecting, or for a room still being joined.
*queued*: waiting, in order, for a token of the broker's flood bucket
(:class:`client.pacing.BrokerBucket`); ``join``, ``part`` and ``nick`` take
their turn in the same queue, as the broker counts them in the same bucket.
*sent*: on the wire; sent again, with the same key, until acknowledged, so a
line lost in a full socket queue or a paused broker is never lost for good:

* at once when the broker acknowledges a line sent *after* it: one
  connection's requests are handled and answered in order, so it was lost;
* on a timer (doubling, at most ``RESEND_CAP`` apart) for lines at the end,
  but only while no acknowledgement at all has come for ``resend_after``: on
  a slow link whose acks keep coming, resending would only add to the load.
(A wrong guess costs a repeat, which the broker drops by key, never a loss.)
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass
from enum import Enum

from client import events as ev
from client.pacing import BrokerBucket
from protocol import Request, Say, SendPrivate

__all__ = ["RATE_LIMITED_RETRIES", "RESEND_CAP", "LineState", "Outbox"]

#: Times a line refused as ``rate_limited`` is sent again before it is reported.
RATE_LIMITED_RETRIES = 3
#: Longest wait between two resends of one unacknowledged line, in seconds.
RESEND_CAP = 16.0
#: Wait before resending a line the socket could not take (a full queue).
NOT_SENT_RETRY = 0.25

Line = Say | SendPrivate


class LineState(Enum):
    """Where a line is on its way to the broker."""

    HELD = "held"
    QUEUED = "queued"
    SENT = "sent"


_LINE_MOVES: dict[LineState, dict[str, LineState]] = {
    LineState.HELD: {"release": LineState.QUEUED, "hold": LineState.HELD},
    LineState.QUEUED: {"token": LineState.SENT, "hold": LineState.HELD},
    LineState.SENT: {
        "resend": LineState.QUEUED,
        "throttled": LineState.QUEUED,
        "later": LineState.SENT,
        "hold": LineState.HELD,
    },
}


@dataclass
class _Entry:
    line: Line
    state: LineState
    resend_at: float = 0.0
    sends: int = 0
    throttled: int = 0
    #: Order of the latest send among all sends (for the in-order inference).
    sent_as: int = 0

    def move(self, what: str) -> None:
        self.state = _LINE_MOVES[self.state][what]


class Outbox:
    """Unacknowledged lines, their keys, the pacing queue and the resend timer."""

    def __init__(self, *, resend_after: float = 2.0) -> None:
        self.bucket = BrokerBucket()
        #: First resend of an unacknowledged line after this long (doubling).
        self.resend_after = resend_after
        self._prefix = secrets.token_hex(6)
        self._keys = 0
        self._lines: OrderedDict[str, _Entry] = OrderedDict()
        # Keys of queued lines and paced control requests, in sending order.
        self._queue: deque[str | Request] = deque()
        # (send number, key) of lines on the wire, oldest first; stale entries
        # (acknowledged or sent again since) are skipped when reached.
        self._wire: deque[tuple[int, str]] = deque()
        self._sends = 0
        #: When the broker last acknowledged a line (progress of the link).
        self.progress = 0.0

    # --- what the session asks ---------------------------------------------

    def new_key(self) -> str:
        """A key unique across clients: a random prefix and a counter (§5.5)."""
        self._keys += 1
        return f"{self._prefix}-{self._keys}"

    def add(self, line: Line, *, ready: bool) -> None:
        """Take a keyed line; ``ready``: it may be sent as soon as its turn comes."""
        assert line.key is not None
        entry = _Entry(line, LineState.HELD)
        self._lines[line.key] = entry
        if ready:
            entry.move("release")
            self._queue.append(line.key)

    def control(self, request: Request) -> None:
        """A flood-controlled request (``join``, ``part``, ``nick``): in turn."""
        self._queue.append(request)

    def release(self, ready: set[str] | None) -> None:
        """Queue the held lines whose room is in ``ready`` (None: all of them;
        private lines go whenever we are connected), in the order typed."""
        for key, entry in self._lines.items():
            if entry.state is not LineState.HELD:
                continue
            line = entry.line
            if ready is None or isinstance(line, SendPrivate) or line.room in ready:
                entry.move("release")
                self._queue.append(key)

    def hold_all(self) -> list[Request]:
        """The connection is gone: every line waits for the rejoin; returns the
        paced control requests that never went out (the caller decides)."""
        for entry in self._lines.values():
            entry.move("hold")
        self._wire.clear()
        controls = [item for item in self._queue if not isinstance(item, str)]
        self._queue.clear()
        return controls

    def send_due(self, now: float) -> list[Request]:
        """What to send now: lines whose resend time came, then the queue in
        order while the broker's bucket has tokens."""
        # Lines deferred on purpose (sent_as 0: unavailable) go when due;
        # the others only once acks stopped coming.
        stalled = now - self.progress >= self.resend_after
        self._requeue(
            [
                key
                for key, entry in self._lines.items()
                if entry.state is LineState.SENT
                and entry.resend_at <= now
                and (stalled or entry.sent_as == 0)
            ]
        )
        out: list[Request] = []
        while self._queue and self.bucket.take(now):
            item = self._queue.popleft()
            if not isinstance(item, str):
                out.append(item)
                continue
            entry = self._lines.get(item)
            if entry is None or entry.state is not LineState.QUEUED:
                continue  # acknowledged or given up meanwhile; the token is spent
            entry.move("token")
            entry.sends += 1
            entry.resend_at = now + min(RESEND_CAP, self.resend_after * 2 ** (entry.sends - 1))
            self._sends += 1
            entry.sent_as = self._sends
            self._wire.append((self._sends, item))
            out.append(entry.line)
        return out

    def _requeue(self, keys: list[str]) -> None:
        """Send ``keys`` (sent lines, oldest first) again, ahead of newer lines."""
        for key in reversed(keys):
            self._lines[key].move("resend")
            self._queue.appendleft(key)

    # --- what the broker answers -------------------------------------------

    def ack(self, key: str, now: float) -> bool:
        """The broker stored the line; returns whether it was ours. Lines sent
        before it on this connection and not acknowledged were lost: they go
        again at once."""
        entry = self._lines.pop(key, None)
        if entry is None:
            return False
        self.progress = now
        lost: list[str] = []
        while self._wire and self._wire[0][0] <= entry.sent_as:
            sent_as, earlier = self._wire.popleft()
            other = self._lines.get(earlier)
            if other is not None and other.state is LineState.SENT and other.sent_as == sent_as:
                lost.append(earlier)
        self._requeue(lost)
        return True

    def throttled(self, key: str, now: float) -> bool:
        """The broker refused the line as ``rate_limited``: our mirror of its
        bucket was fuller than the real one (another clock, jitter, a restarted
        broker). Send it again first, after a token; False once it has been
        refused too often (the caller reports it)."""
        entry = self._lines.get(key)
        if entry is None:
            return False
        self.bucket.penalize(now)
        if entry.throttled >= RATE_LIMITED_RETRIES:
            return False
        entry.throttled += 1
        if entry.state is LineState.SENT:
            entry.move("throttled")
            self._queue.appendleft(key)
        return True

    def later(self, key: str, now: float, delay: float) -> bool:
        """Resend the line (same key) ``delay`` seconds from now: the broker
        could not store it (``unavailable``) or the socket could not take it."""
        entry = self._lines.get(key)
        if entry is None:
            return False
        if entry.state is LineState.SENT:
            entry.move("later")
            entry.resend_at = now + delay
            entry.sent_as = 0  # not "lost" when a later line is acknowledged
        return True

    def not_sent(self, requests: list[Request]) -> None:
        """The socket did not take ``requests`` (a full send queue): their
        lines go back to the front of the queue, in order, so a line refused
        by the socket is not overtaken by the next one. Their tokens are
        given back: the broker never saw them."""
        keys = [r.key for r in requests if isinstance(r, Say | SendPrivate) and r.key]
        for key in reversed(keys):
            entry = self._lines.get(key)
            if entry is None or entry.state is not LineState.SENT:
                continue
            entry.move("resend")
            entry.sends -= 1  # not a send: no longer wait before the next
            self._queue.appendleft(key)
            self.bucket.refund()

    def fail(self, key: str) -> Line | None:
        """Stop trying to deliver ``key``; returns the line if it was ours."""
        entry = self._lines.pop(key, None)
        return entry.line if entry is not None else None

    def fail_room(self, room: str) -> list[Line]:
        """Give up the lines held for ``room`` (we could not join it)."""
        gone = [
            key
            for key, entry in self._lines.items()
            if isinstance(entry.line, Say) and entry.line.room == room
        ]
        return [self._lines.pop(key).line for key in gone]

    def give_up(self, reason: str) -> list[ev.Event]:
        """Report every line not acknowledged yet as ``not_delivered`` (with its
        text and key), so none is lost silently."""
        out: list[ev.Event] = [_not_delivered(e.line, reason) for e in self._lines.values()]
        self._lines.clear()
        self._queue.clear()
        return out

    # --- what front-ends ask ---------------------------------------------------

    def __len__(self) -> int:
        """Lines not acknowledged yet (held, queued or sent)."""
        return len(self._lines)

    def count(self, state: LineState) -> int:
        """Lines in ``state``."""
        return sum(1 for e in self._lines.values() if e.state is state)

    def state_of(self, key: str) -> LineState | None:
        """Where the line ``key`` is (None: acknowledged or given up)."""
        entry = self._lines.get(key)
        return entry.state if entry is not None else None


def _not_delivered(line: Line, reason: str) -> ev.Error:
    return ev.Error(
        code="not_delivered",
        message=reason,
        req="say" if isinstance(line, Say) else "msg",
        room=line.room if isinstance(line, Say) else None,
        text=line.text,
        key=line.key,
    )
