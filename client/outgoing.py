"""What the session sends, and the two ledgers kept in step with it.

The session core (client/session.py) and its parts never write to a socket:
they add to an :class:`Output` that the front-end carries out (reset the
sockets, connect the SUB, change subscriptions, send requests, in that
order). :class:`Outgoing` is that output together with the ledgers every
request passes through: the :class:`client.outbox.Outbox` (lines, and the
requests the broker's flood bucket counts, in one paced queue) and the
:class:`client.requests.RequestTracker` (every request answered or failed).
Lines and paced requests leave only while the session is joined
(:attr:`Outgoing.open`); the rest is held until then.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from client.outbox import NOT_SENT_RETRY, Outbox
from client.requests import Purpose, RequestTracker, Tracked
from protocol import History, Join, Part, Rename, Request

__all__ = ["Outgoing", "Output"]


@dataclass
class Output:
    """What the front-end must do next, in this order."""

    reset: bool = False
    connect_pub: str | None = None
    subscribe: list[tuple[bool, bytes]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)


class Outgoing:
    """The output being gathered, the outbox and the request tracker."""

    def __init__(self, outbox: Outbox, requests: RequestTracker) -> None:
        self.outbox = outbox
        self.requests = requests
        #: Whether lines and paced requests may leave (the session is joined).
        self.open = False
        self._out = Output()

    def take(self) -> Output:
        """What to do now; forgotten once taken."""
        out, self._out = self._out, Output()
        return out

    def reset(self) -> None:
        """New sockets: what was gathered for the old ones is dropped (the
        requests that matter are resent by their ledgers)."""
        self._out = Output(reset=True)

    def connect_pub(self, endpoint: str) -> None:
        """Connect the SUB socket to ``endpoint``."""
        self._out.connect_pub = endpoint

    def subscribe(self, topic: bytes, *, on: bool = True) -> None:
        """Subscribe to ``topic`` (``on=False``: unsubscribe)."""
        self._out.subscribe.append((on, topic))

    def send(self, request: Request) -> None:
        """Send ``request`` as it is, untracked (hello, ping, bye)."""
        self._out.requests.append(request)

    def track(self, request: Tracked, now: float, purpose: Purpose = Purpose.USER) -> int:
        """Send ``request`` and wait for its answer; returns its id."""
        number = self.requests.add(request, now, purpose)
        self.send(request)
        return number

    def pace(self, request: Join | Part | Rename, now: float) -> int:
        """A request the broker's flood bucket counts: tracked, and sent in
        turn with the lines; returns its id."""
        number = self.requests.add(request, now, queued=True)
        self.outbox.control(request)
        self.flush(now)
        return number

    def repair(self, request: History, now: float) -> None:
        """A room's repair request (its sequencer keeps the deadline)."""
        self.track(request, now, Purpose.REPAIR)

    def flush(self, now: float) -> None:
        """Send the lines and paced requests whose turn came, if open."""
        if self.open:
            for request in self.outbox.send_due(now):
                if isinstance(request, Join | Part | Rename):
                    self.requests.sent(request, now)
                self.send(request)

    def resend(self, now: float) -> None:
        """Send again the requests waiting to be (after a rejoin, a full
        socket, a ``syncing`` refusal)."""
        for request in self.requests.resend(now):
            if isinstance(request, Part | Rename):
                self.outbox.control(request)  # the flood bucket counts these
            else:
                self.send(request)

    def not_sent(self, requests: list[Request], now: float) -> None:
        """The socket could not take ``requests`` (a full send queue; the
        first refused and the ones after it, in order): lines go again first,
        in the same order, with their keys; other requests a moment later."""
        self.outbox.not_sent(requests)
        for request in requests:
            if isinstance(request, Tracked):
                self.requests.not_sent(request, now + NOT_SENT_RETRY)
