"""Shared fixtures: brokers on 127.0.0.1 with ephemeral ports, in-process or as
the installed ``chat-broker`` console script, each stopped by its own handle."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from broker import BrokerConfig, BrokerServer
from broker.history import HistoryStore
from broker.testing import RunningBroker, serve_in_thread
from client import Client
from client import events as ev
from client.session import ClientSession
from protocol import Joined, Limits, Welcome


def pytest_addoption(parser: pytest.Parser) -> None:
    # Here, not in tests/conformance/conftest.py: pytest only learns options
    # from conftest files it loads at start-up.
    group = parser.getgroup("conformance", "protocol v1 conformance suite (docs/CONFORMANCE.md)")
    group.addoption("--router", default=None, help="ROUTER endpoint of the broker to check")
    group.addoption("--pub", default=None, help="PUB endpoint (default: from the welcome)")


def welcome(
    nick: str = "me", *, broker: str = "b", session: str = "tok", rate: float = 0.0, burst: int = 0
) -> Welcome:
    """A broker's welcome, for tests that drive the client's session core."""
    limits = Limits(
        text_bytes=4096,
        nick_length=32,
        room_length=32,
        rooms_per_client=50,
        frame_bytes=65536,
        rate=rate,
        burst=burst,
    )
    return Welcome(
        v=1,
        nick=nick,
        session=session,
        pub="tcp://127.0.0.1:1",
        broker=broker,
        heartbeat=1.0,
        timeout=5.0,
        limits=limits,
    )


def joined_session(
    rooms: tuple[str, ...] = ("lobby",),
    *,
    seq: int = 0,
    rate: float = 0.0,
    burst: int = 0,
    epoch: str = "",
    now: float = 0.0,
) -> ClientSession:
    """A session core in ``rooms`` (each at ``seq``), its output taken: the
    starting point of the tests that drive the core with made-up time."""
    session = ClientSession("me", list(rooms), backlog=0, jitter=lambda: 0.5)
    session.hello(now)
    session.on_reply(welcome(rate=rate, burst=burst), now)
    for room in rooms:
        session.on_reply(Joined(room=room, seq=seq, members=["me"], epoch=epoch), now)
    session.take_output()
    return session


#: Scales every wait in the tests (slow machines: CHAT_TEST_SCALE=3).
SCALE = float(os.environ.get("CHAT_TEST_SCALE", "1"))
ANY_PORT = "tcp://127.0.0.1:*"
BIN = Path(sys.executable).parent

E = TypeVar("E")


def script(name: str) -> str:
    """Path of an installed console script of this project."""
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed: run `make test`"
    return found


class InProcessBroker(RunningBroker):
    """A broker running in a thread of the test process (client.testing's)."""

    def stop(self, timeout: float = 5 * SCALE) -> None:
        super().stop(timeout)


def start_broker(
    config: BrokerConfig | None = None,
    history: HistoryStore | None = None,
    router: str = ANY_PORT,
    pub: str = ANY_PORT,
) -> InProcessBroker:
    """Start an in-process broker on ephemeral ports."""
    server = BrokerServer(
        router,
        pub,
        # Flood control is off here: tests send bursts on purpose, and the
        # limits have tests of their own (test_security.py, test_ratelimit.py).
        config or BrokerConfig(client_timeout=3.0, heartbeat=0.5, max_rate=0),
        history,
    )
    running = serve_in_thread(server)
    return InProcessBroker(running.server, running.thread)


@pytest.fixture
def broker() -> Iterator[InProcessBroker]:
    """An in-process broker with a 3 s client timeout and 0.5 s heartbeats."""
    running = start_broker()
    yield running
    running.stop()


@dataclass
class BrokerProcess:
    """The ``chat-broker`` console script in a subprocess."""

    proc: subprocess.Popen[bytes]
    router: str
    pub: str
    log: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the broker, wait for it, and release its stderr pipe."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            status = self.proc.wait(10 * SCALE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait(5)
        if self.reader is not None:
            self.reader.join(5)  # it ends at the pipe's end of file
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return status

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        """Wait until a stderr line matches ``pattern``; returns the line."""
        deadline = time.monotonic() + timeout * SCALE
        regex = re.compile(pattern)
        seen = 0
        while time.monotonic() < deadline:
            for line in self.log[seen:]:
                if regex.search(line):
                    return line
            seen = len(self.log)
            time.sleep(0.02)
        raise AssertionError(f"broker never logged {pattern!r}; log:\n" + "".join(self.log))


def has_ipv6_loopback() -> bool:
    """Whether this host can bind ::1 (some CI containers have no IPv6 at all)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def spawn_broker(
    *args: str, router: str = ANY_PORT, pub: str = ANY_PORT, prefix: tuple[str, ...] = ()
) -> BrokerProcess:
    """Start ``chat-broker`` with ephemeral ports and read back where it bound;
    ``prefix`` runs it through another command (``ip netns exec NAME``)."""
    if "--history" not in args:
        args = (*args, "--history", ":memory:")  # never the user's own history file
    proc = subprocess.Popen(
        [*prefix, script("chat-broker"), "--router", router, "--pub", pub, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    log: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            log.append(raw.decode("utf-8", "replace"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    handle = BrokerProcess(proc, "", "", log, reader)
    try:
        handle.router = re.search(
            r"router bound to (\S+)", handle.wait_for_log("router bound to")
        ).group(1)  # type: ignore[union-attr]
        handle.pub = re.search(r"pub bound to (\S+)", handle.wait_for_log("pub bound to")).group(1)  # type: ignore[union-attr]
    except BaseException:
        handle.stop(signal.SIGKILL)
        raise
    return handle


@pytest.fixture
def chat_broker() -> Iterator[BrokerProcess]:
    """``chat-broker`` as a subprocess, with a 3 s client timeout."""
    handle = spawn_broker("--client-timeout", "3")
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def broker_process() -> Iterator[BrokerProcess]:
    """``chat-broker`` as a subprocess, with a 2 s client timeout."""
    handle = spawn_broker("--client-timeout", "2")
    yield handle
    handle.stop()


def wait_for(
    client: Client,
    kind: type[E],
    predicate: Callable[[E], bool] = lambda e: True,
    timeout: float = 5.0,
) -> E:
    """The next event of ``kind`` matching ``predicate``; fails after ``timeout``."""
    deadline = time.monotonic() + timeout * SCALE
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {kind.__name__} event within {timeout} s")
        try:
            event = client.next_event(left)
        except TimeoutError:
            continue
        if isinstance(event, kind) and predicate(event):
            return event


@pytest.fixture
def connect(broker: InProcessBroker) -> Iterator[Callable[..., Client]]:
    """Make joined clients of the ``broker`` fixture; all closed at the end."""
    made: list[Client] = []

    def make(nick: str, room: str = "lobby", **options: object) -> Client:
        client = Client(broker.router, nick, room, **options)  # type: ignore[arg-type]
        made.append(client)
        client.connect(timeout=5 * SCALE)
        return client

    yield make
    for client in made:
        client.close()


__all__ = ["ev"]
