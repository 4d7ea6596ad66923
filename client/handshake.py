"""Watching the security handshake of every DEALER the client makes
(docs/SECURITY.md, "Deploying with CURVE").

With CURVE, a broker that refuses our key (or speaks plain text to our
CURVE, or the other way round) says nothing on the connection: ZeroMQ just
retries. Only the socket monitor tells, so :class:`HandshakeWatch` watches
each DEALER from before it connects until it is closed, and hands every
refusal to a callback: while ``connect`` waits for its welcome, the refusal
fails it with ``auth_failed``; while reconnecting, the session core decides
(client/session.py, ``handshake_refused``: try the other brokers, or give up).

Every DEALER: with several brokers (``--server A --server B``) the first
``hello`` and every reconnect try move to the next endpoint on a fresh
DEALER (client/failover.py), and a refusal by the second or third broker is
as much a refusal as one by the first, not an unreachable broker.

The same monitor (a DEALER has one: libzmq replaces a previous one) also
tells when an established connection drops: a broker killed with SIGKILL,
or crashing, closes its TCP connections at once, but ZeroMQ hides that and
just reconnects, so the session would call the broker lost only after three
silent heartbeats (client/link.py). A disconnect after a successful
handshake goes to the ``dropped`` callback at once; the front-end hands it
to the session core (``ClientSession.link_dropped``). Heartbeats stay for
what closes nothing: a host gone from the network, a stopped broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

__all__ = ["DROPS_BEFORE_GIVING_UP", "DROP_WINDOW", "HandshakeWatch", "handshake_message"]

#: Handshake failures that end a connect at once: with CURVE a refusal is
#: otherwise silent (ZeroMQ just retries), and we would wait for the timeout.
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
#: A connection up, and one going down (also after a failed handshake, which
#: is not a drop: only a disconnect after a success is).
_CONNECTION = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
#: Handshakes dropped without detail, in quick succession, that make a
#: refusal (each retry takes ZeroMQ's reconnect interval, 0.1 s by default).
DROPS_BEFORE_GIVING_UP = 3
#: ... all within this many seconds. A broker that is frozen (SIGSTOP) or
#: overloaded also drops handshakes without detail, but each only after the
#: handshake timeout (ZMQ_HANDSHAKE_IVL, 30 s): that is a slow broker, not a
#: refusal, and the session watches its sockets for hours.
DROP_WINDOW = 10.0

_monitor_ids = itertools.count()


class HandshakeWatch:
    """Calls ``refused(server, message)`` once for each DEALER given to
    :meth:`watch` whose handshake fails; :meth:`forget` ends the watching of
    one DEALER, :meth:`stop` of all. Calls ``dropped(server)`` each time an
    established connection of a watched DEALER closes."""

    def __init__(
        self,
        refused: Callable[[str, str], None],
        clock: Callable[[], float] = time.monotonic,
        *,
        dropped: Callable[[str], None] | None = None,
    ) -> None:
        self._refused = refused
        self._clock = clock
        self._dropped = dropped
        self._watched: dict[zmq.asyncio.Socket, tuple[zmq.asyncio.Socket, asyncio.Task[None]]] = {}

    def watch(self, dealer: zmq.asyncio.Socket, server: str) -> None:
        """Watch ``dealer``, which talks to ``server``. Call it before the
        DEALER connects: libzmq reports a refused key or a CURVE/plain
        mismatch once and does not retry, so a failure before the monitor
        listens (a loaded machine) would be missed."""
        # A fresh address per monitor: libzmq may still hold the previous
        # one's inproc address when a connect is retried with a new nick.
        monitor = dealer.get_monitor_socket(
            _HANDSHAKE_FAILED | _CONNECTION,
            addr=f"inproc://chat-client-monitor-{next(_monitor_ids)}",
        )
        task = asyncio.create_task(self._watch(monitor, server), name="chat-client-handshake")
        self._watched[dealer] = (monitor, task)

    async def _watch(self, monitor: zmq.asyncio.Socket, server: str) -> None:
        dropped: list[float] = []
        up = False  # the connection's handshake succeeded, and it did not drop since
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                up = True
                continue
            if event["event"] == zmq.EVENT_DISCONNECTED:
                if up and self._dropped is not None:
                    self._dropped(server)
                up = False
                continue
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                # A wrong server key, or a plain client meeting a CURVE
                # broker, looks like this every time, at once; a broker going
                # away mid-handshake only once, a frozen one every 30 s: wait
                # for a quick pattern.
                now = self._clock()
                dropped = [at for at in dropped if now - at < DROP_WINDOW] + [now]
                if len(dropped) < DROPS_BEFORE_GIVING_UP:
                    continue
            self._refused(server, handshake_message(event["event"], event["value"], server))
            return  # told once per DEALER: libzmq may go on retrying it

    def forget(self, dealer: zmq.asyncio.Socket) -> None:
        """Stop watching ``dealer`` (before it is closed) and close its monitor."""
        watched = self._watched.pop(dealer, None)
        if watched is None:
            return
        monitor, task = watched
        task.cancel()  # closing the monitor cancels the pending receive too
        with contextlib.suppress(zmq.ZMQError):
            dealer.disable_monitor()  # a DEALER closed meanwhile has none
        monitor.close(linger=0)

    async def stop(self) -> None:
        """Stop watching every DEALER and close the monitors (the context
        waits for every socket). Safe to call twice."""
        tasks = [task for _, task in self._watched.values()]
        for dealer in list(self._watched):
            self.forget(dealer)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def handshake_message(event: int, value: int, server: str) -> str:
    """What to tell a person whose security handshake with ``server`` failed."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return (
            f"authentication failed: the broker at {server} refused our key "
            f"(ZAP status {value}); is our public key in its --allow-keys directory?"
        )
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return (
            f"authentication failed: security handshake with {server} failed "
            f"(protocol error {value:#x}); one side uses CURVE and the other "
            "does not, or the keys are not valid (--server-key)"
        )
    return (
        f"authentication failed: the broker at {server} dropped the encrypted "
        "handshake; is --server-key the broker's public key?"
    )
