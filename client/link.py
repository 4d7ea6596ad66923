"""The link to the broker, as the session core (client/session.py) sees it:
which broker (client/failover.py), what its welcome said (our session's
token, the broker's identity, its limits and timings), whether it is alive
(docs/PROTOCOL.md §5.2), and when to say ``hello`` again after losing it
(client/reconnect.py, §5.3). Time is a parameter; nothing here sends.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from client import events as ev
from client.failover import CONNECT_TRY, Endpoints
from client.reconnect import Retry
from protocol import Limits, Welcome

__all__ = ["DEFAULT_HEARTBEAT", "Link", "reachable"]

#: Heartbeat interval used until the welcome says otherwise.
DEFAULT_HEARTBEAT = 2.0


class Link:
    """The broker we talk to, what it told us, and its liveness."""

    def __init__(
        self,
        server: str | Sequence[str],
        *,
        pub_override: str | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        #: The brokers' ROUTER endpoints; raises ProtocolError (bad_endpoint).
        self.endpoints = Endpoints(server)
        self.pub_override = pub_override
        self.retry = Retry(jitter)
        #: Our session's token, from the welcome (None before the first).
        self.session_token: str | None = None
        self.broker_id: str | None = None
        #: Whether the latest welcome came from another broker than the one before.
        self.restarted = False
        #: ... and that broker resumed our session whole (the same token): a
        #: failover to another broker of the cluster, nothing was rebuilt.
        self.moved = False
        #: The broker's limits from the latest welcome (a restarted broker may
        #: have other ones); None before the first welcome.
        self.limits: Limits | None = None
        self.heartbeat = DEFAULT_HEARTBEAT
        self.broker_timeout = 10.0
        self.last_heard = 0.0
        self._next_ping = 0.0
        self._hello_at = 0.0
        # When the sockets were last made anew while reconnecting: a session
        # holding our nickname on the old ones expires within the broker's
        # timeout from then on.
        self._reset_at = 0.0
        self._told_nick_wait = False
        #: Endpoints that refused our key since the latest welcome
        #: (:meth:`refused_by`): told once each, and skipped while others remain.
        self.refused: set[str] = set()

    @property
    def server(self) -> str:
        """The ROUTER endpoint in use."""
        return self.endpoints.current

    @property
    def dead_after(self) -> float:
        """Seconds of silence after which the broker is taken for lost."""
        return max(3 * self.heartbeat, 1.0)

    def hello(self, now: float) -> None:
        """A first ``hello`` goes out now."""
        self.last_heard = self._hello_at = now

    def welcome(self, reply: Welcome, now: float) -> str:
        """Take what the welcome says; returns the PUB endpoint to connect to."""
        if self.broker_id is not None and reply.broker != self.broker_id:
            self.restarted = True
            self.moved = reply.session == self.session_token
        self.session_token = reply.session
        self.refused.clear()  # a broker took us: a later refusal is news again
        self.broker_id = reply.broker
        self.limits = reply.limits
        self.heartbeat = reply.heartbeat
        self.broker_timeout = reply.timeout
        self._next_ping = now + self.heartbeat
        return self.pub_override or reachable(reply.pub, self.server)

    def dead(self, now: float) -> bool:
        """Whether the broker has been silent too long."""
        return now - self.last_heard > self.dead_after

    def ping_due(self, now: float) -> bool:
        """Whether to ping now (the next one is then scheduled)."""
        if now < self._next_ping:
            return False
        self._next_ping = now + self.heartbeat
        return True

    def first_try_over(self, now: float) -> bool:
        """Whether a first ``hello`` went unanswered too long with several
        endpoints: that broker is down (or far), so this moves to the next
        one, and the caller says ``hello`` there on fresh sockets."""
        if (
            len(self.endpoints) < 2
            or self.session_token is not None  # welcomed once: not a first try
            or now - self._hello_at < CONNECT_TRY
        ):
            return False
        self.endpoints.advance()
        self._hello_at = now
        return True

    def lost(self, now: float, *, shutdown: bool = False) -> None:
        """The broker is lost (``shutdown``: it said it is going)."""
        self.retry.start(now, shutdown=shutdown)
        self._told_nick_wait = False

    def try_due(self, now: float) -> bool | None:
        """While reconnecting: None if no ``hello`` is due now; else whether it
        goes on fresh sockets."""
        attempt = self.retry.due(now)
        if not attempt:
            return None
        if len(self.endpoints) > 1:
            # Another broker of the cluster resumes the session (§5.3): a
            # fresh connection to the next endpoint for every try (a session
            # a try left behind holding our nickname expires within the
            # timeout from the latest one).
            self.endpoints.advance()
            while self.server in self.refused and len(self.refused) < len(self.endpoints):
                self.endpoints.advance()  # it refused our key: try the others first
        elif attempt > 1:
            # A fresh SUB (it keeps its subscriptions) and DEALER (the broker
            # may know the old routing id no more) for the first try only.
            # Later tries reuse them: a hello the broker got and answered late
            # must not leave a session holding our nickname.
            return False
        self._reset_at = now
        return True

    def refused_by(self, server: str) -> bool | None:
        """``server`` refused our key while reconnecting: None if it was told
        already; else whether another endpoint remains to try (docs/SECURITY.md,
        "A refusal while reconnecting")."""
        if server in self.refused or server not in self.endpoints.all:
            return None
        self.refused.add(server)
        return len(self.refused) < len(self.endpoints)

    def wait_for_nick(self, now: float) -> list[ev.Event] | None:
        """A rejoin refused as ``nick_taken``: our old session (or one an
        earlier try made on sockets we closed) still holds the nickname and
        times out by itself. Keep trying on the backoff until it must have
        (the broker's timeout and three heartbeats after the sockets were
        made anew; docs/PROTOCOL.md §5.3, step 4); None once past that."""
        until = self._reset_at + self.broker_timeout + self.dead_after
        if now >= until:
            return None
        if self._told_nick_wait:
            return []
        self._told_nick_wait = True
        return [ev.Connection(state="waiting_for_nick", wait=round(until - now, 1))]

    def named(self) -> str:
        """The endpoint a ``connection`` event names: only with several
        endpoints (failover); with one, events stay as they always were, and
        so does the JSON mode's output."""
        return self.server if len(self.endpoints) > 1 else ""


def reachable(pub: str, server: str) -> str:
    """The PUB endpoint from a welcome, with a wildcard host (``*``, ``0.0.0.0``)
    replaced by the host we reached the router on."""
    parts = urlsplit(pub)
    try:
        port = parts.port
    except ValueError:  # not a port at all: the front-end reports the endpoint
        return pub
    if parts.scheme != "tcp" or parts.hostname not in ("*", "0.0.0.0", "::", None):
        return pub
    host = urlsplit(server).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"tcp://{host}:{port}"
