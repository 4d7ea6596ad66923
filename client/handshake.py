"""Watching the security handshake while a client joins (docs/SECURITY.md,
"Deploying with CURVE").

With CURVE, a broker that refuses our key (or speaks plain text to our
CURVE, or the other way round) says nothing on the connection: ZeroMQ just
retries. Only the socket monitor tells, so while ``connect`` waits for its
welcome, :class:`HandshakeWatch` watches every DEALER the client makes, and
fails the wait with ``auth_failed`` as soon as one of them is refused.

Every DEALER: with several brokers (``--server A --server B``) the first
``hello`` moves to the next endpoint on a fresh DEALER when one does not
answer (client/failover.py), and a refusal by the second or third broker is
as much a refusal as one by the first, not an unreachable broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from protocol import JoinRefused

__all__ = ["DROPS_BEFORE_GIVING_UP", "HandshakeWatch", "handshake_message"]

#: Handshake failures that end a connect at once: with CURVE a refusal is
#: otherwise silent (ZeroMQ just retries), and we would wait for the timeout.
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
#: Handshakes dropped without detail before connect gives up (each retry
#: takes ZeroMQ's reconnect interval, 0.1 s by default).
DROPS_BEFORE_GIVING_UP = 3

_monitor_ids = itertools.count()


class HandshakeWatch:
    """Fails ``waiter`` with JoinRefused("auth_failed") when the handshake of
    any DEALER given to :meth:`watch` fails; :meth:`stop` ends the watching."""

    def __init__(self, waiter: asyncio.Future[Any]) -> None:
        self._waiter = waiter
        self._watched: list[tuple[zmq.asyncio.Socket, zmq.asyncio.Socket, asyncio.Task[None]]] = []

    def watch(self, dealer: zmq.asyncio.Socket, server: str) -> None:
        """Watch ``dealer``, which talks to ``server``. Call it before the
        DEALER connects: libzmq reports a refused key or a CURVE/plain
        mismatch once and does not retry, so a failure before the monitor
        listens (a loaded machine) would be missed."""
        # A fresh address per monitor: libzmq may still hold the previous
        # one's inproc address when a connect is retried with a new nick.
        monitor = dealer.get_monitor_socket(
            _HANDSHAKE_FAILED, addr=f"inproc://chat-client-monitor-{next(_monitor_ids)}"
        )
        task = asyncio.create_task(self._watch(monitor, server), name="chat-client-handshake")
        self._watched.append((dealer, monitor, task))

    async def _watch(self, monitor: zmq.asyncio.Socket, server: str) -> None:
        waiter = self._waiter
        dropped = 0
        while not waiter.done():
            event = parse_monitor_message(await monitor.recv_multipart())
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                # A wrong server key, or a plain client meeting a CURVE
                # broker, looks like this every time; a broker going away
                # mid-handshake only once: wait for a pattern.
                dropped += 1
                if dropped < DROPS_BEFORE_GIVING_UP:
                    continue
            if not waiter.done():
                message = handshake_message(event["event"], event["value"], server)
                waiter.set_exception(JoinRefused("auth_failed", message))

    async def stop(self) -> None:
        """Stop watching every DEALER and close the monitors (the context
        waits for every socket). Safe to call twice."""
        watched, self._watched = self._watched, []
        for dealer, monitor, task in watched:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(zmq.ZMQError):
                dealer.disable_monitor()  # a DEALER closed meanwhile has none
            monitor.close(linger=0)


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
