"""A real broker in the test's own process, for testing clients and bots
against it (docs/BOTS.md, "Testing a bot"): :func:`running_broker` and
:func:`serve_in_thread`. It lives with the broker so that the client library
never imports the broker.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from broker.core import BrokerConfig
from broker.server import BrokerServer

__all__ = ["RunningBroker", "running_broker", "serve_in_thread"]


@dataclass
class RunningBroker:
    """A broker serving in a thread of this process; see :func:`running_broker`."""

    server: BrokerServer
    thread: threading.Thread

    @property
    def router(self) -> str:
        """Where clients and bots connect (``--server``)."""
        return self.server.router_endpoint

    @property
    def pub(self) -> str:
        """The broker's PUB endpoint."""
        return self.server.pub_endpoint

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker and wait for its thread (its sockets close with it).

        Raises RuntimeError if it does not stop within ``timeout`` seconds.
        """
        self.server.stop()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"the test broker did not stop within {timeout} s")


def serve_in_thread(server: BrokerServer) -> RunningBroker:
    """Run ``server``'s loop in a daemon thread; stop it with :meth:`RunningBroker.stop`."""
    thread = threading.Thread(target=server.serve_forever, name="test-broker", daemon=True)
    thread.start()
    return RunningBroker(server, thread)


@contextlib.contextmanager
def running_broker(
    *,
    heartbeat: float = 0.5,
    client_timeout: float = 3.0,
    max_rate: float = 5.0,
    burst: int = 10,
) -> Iterator[RunningBroker]:
    """A real broker on ephemeral ports of 127.0.0.1, in a thread, for the
    ``with`` block; stopped (and its sockets closed) at the end.

    Raises RuntimeError if it does not stop within 5 s.
    """
    config = BrokerConfig(
        heartbeat=heartbeat, client_timeout=client_timeout, max_rate=max_rate, burst=burst
    )
    running = serve_in_thread(BrokerServer("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", config))
    try:
        yield running
    finally:
        running.stop()
