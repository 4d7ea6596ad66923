"""Fixtures of the conformance suite: which broker to check, and raw clients.

The broker under test is, in order of preference:

1. the endpoints given by the options ``--router`` / ``--pub`` (declared in
   tests/conftest.py, which pytest loads at start-up);
2. the environment variables ``CHAT_ROUTER`` / ``CHAT_PUB`` (``CHAT_PUB`` is
   optional: the welcome says where the PUB socket is);
3. otherwise our own ``chat-broker``, started here on ephemeral ports with its
   history in memory, and stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq

from tests.conformance.rawchat import SCALE, RawClient, unique_nick


@dataclass
class Target:
    """The broker under test."""

    router: str
    pub: str | None
    #: True when this suite started the broker (so its settings are known).
    ours: bool


def _option(config: pytest.Config, name: str) -> str | None:
    try:
        value = config.getoption(name)
    except ValueError:  # this conftest was loaded too late to add the option
        return None
    return value if isinstance(value, str) else None


class _Spawned:
    """A ``chat-broker`` subprocess (a minimal stand-in for tests.conftest's)."""

    def __init__(self, *args: str) -> None:
        exe = Path(sys.executable).parent / "chat-broker"
        command = str(exe) if exe.exists() else shutil.which("chat-broker")
        assert command, "chat-broker is not installed; set CHAT_ROUTER to check another broker"
        self.proc = subprocess.Popen(
            [command, "--router", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.log: list[str] = []
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()
        try:
            self.router = self._wait(r"router bound to (\S+)")
            self.pub = self._wait(r"pub bound to (\S+)")
        except BaseException:
            self.stop()
            raise

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.log.append(raw.decode("utf-8", "replace"))

    def _wait(self, pattern: str) -> str:
        deadline = time.monotonic() + 10 * SCALE
        while time.monotonic() < deadline:
            for line in list(self.log):
                found = re.search(pattern, line)
                if found:
                    return found.group(1)
            time.sleep(0.02)
        raise AssertionError(f"chat-broker never logged {pattern!r}: {''.join(self.log)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10 * SCALE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _spawn(*args: str) -> tuple[str, str, Callable[[], object]]:
    """Start our broker; returns its endpoints and how to stop it."""
    try:
        from tests.conftest import spawn_broker
    except ImportError:
        spawned = _Spawned(*args)
        return spawned.router, spawned.pub, spawned.stop
    handle = spawn_broker(*args)
    return handle.router, handle.pub, handle.stop


@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config) -> Iterator[Target]:
    """The broker every conformance test talks to."""
    router = _option(pytestconfig, "--router") or os.environ.get("CHAT_ROUTER")
    pub = _option(pytestconfig, "--pub") or os.environ.get("CHAT_PUB")
    if router:
        yield Target(router, pub, ours=False)
        return
    router, pub, stop = _spawn("--history", ":memory:")
    try:
        yield Target(router, pub, ours=True)
    finally:
        stop()


@pytest.fixture(scope="session")
def zmq_context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """One context for the whole suite; every socket is closed by its test."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.term()


ClientFactory = Callable[[], RawClient]
JoinFactory = Callable[..., RawClient]


def _factory(
    zmq_context: zmq.Context[zmq.Socket[bytes]], router: str, pub: str | None
) -> tuple[Callable[[], RawClient], Callable[[], None]]:
    made: list[RawClient] = []

    def make() -> RawClient:
        client = RawClient(zmq_context, router, pub)
        made.append(client)
        return client

    def cleanup() -> None:
        for client in made:
            if client.welcome is not None:
                # Leave politely, so a shared broker is not left with ghosts.
                client.send({"type": "bye"})
                with contextlib.suppress(AssertionError):
                    client.reply_of("goodbye", timeout=1.0 * SCALE)
            client.close()

    return make, cleanup


@pytest.fixture
def raw(zmq_context: zmq.Context[zmq.Socket[bytes]], target: Target) -> Iterator[ClientFactory]:
    """Make clients that have not said hello yet; all closed at the end."""
    make, cleanup = _factory(zmq_context, target.router, target.pub)
    yield make
    cleanup()


@pytest.fixture
def chat(raw: ClientFactory) -> JoinFactory:
    """Make joined clients: ``chat("alice", rooms=["lobby"])`` with a unique
    nickname built from the name given."""

    def make(base: str = "user", rooms: list[str] | None = None) -> RawClient:
        client = raw()
        client.join(unique_nick(base), rooms)
        return client

    return make


@pytest.fixture(scope="session")
def short_timeout_target(target: Target) -> Iterator[Target]:
    """A broker whose client timeout is short enough to wait for: our own
    broker with ``--client-timeout 1.5``, or the broker under test if its
    welcome says its timeout is at most 5 s (else the test is skipped)."""
    if not target.ours:
        yield target
        return
    router, pub, stop = _spawn("--history", ":memory:", "--client-timeout", "1.5")
    try:
        yield Target(router, pub, ours=True)
    finally:
        stop()


@pytest.fixture
def raw_short(
    zmq_context: zmq.Context[zmq.Socket[bytes]], short_timeout_target: Target
) -> Iterator[ClientFactory]:
    """Like ``raw``, on the short-timeout broker."""
    make, cleanup = _factory(zmq_context, short_timeout_target.router, short_timeout_target.pub)
    yield make
    cleanup()
