"""Processes for the fault-injection suite: a broker that can be killed,
paused and restarted on the same ports with the same history file, clients
that send and receive (``chat-client --json``), and a run that feeds the
senders, waits for the receivers and hands everything to the one checker.

Every wait polls for its condition with a deadline; every process is killed
and every pipe closed in ``close()``, also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.checker import Event, Figures, check, line_text, missing
from tests.conftest import SCALE, script
from tests.jsonclient import JsonClient, start_json_client

__all__ = ["ChaosBroker", "Link", "Run", "link", "rounds"]


def rounds(default: int) -> int:
    """How many rounds a case runs: ``CHAOS_ROUNDS`` (``make chaos``) or ``default``."""
    return max(1, int(os.environ.get("CHAOS_ROUNDS") or default))


def eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout * SCALE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


class ChaosBroker:
    """``chat-broker`` with a SQLite history, restartable on the same endpoints."""

    def __init__(
        self,
        history: Path,
        *args: str,
        host: str = "127.0.0.1",
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.history = history
        self.args = args
        self.host = host
        self.prefix = prefix
        self.router = f"tcp://{host}:*"
        self.pub = f"tcp://{host}:*"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: list[str] = []
        self.starts = 0

    def start(self, timeout: float = 10) -> None:
        """Start (again, on the endpoints of the first start)."""
        deadline = time.monotonic() + timeout * SCALE
        while True:
            if self._try_start(deadline):
                self.starts += 1
                return
            if time.monotonic() > deadline:
                raise AssertionError("broker did not start:\n" + "".join(self.log[-20:]))
            time.sleep(0.1)  # the port of a killed broker is not free yet: retry

    def _try_start(self, deadline: float) -> bool:
        command = [
            *self.prefix,
            script("chat-broker"),
            "--router",
            self.router,
            "--pub",
            self.pub,
            "--history",
            str(self.history),
            *self.args,
        ]
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        lines: list[str] = []
        bound = threading.Event()

        def pump() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                text = raw.decode("utf-8", "replace")
                lines.append(text)
                self.log.append(text)
                if "pub bound to" in text:
                    bound.set()
            bound.set()  # ended: failed to start, or stopped

        threading.Thread(target=pump, daemon=True).start()
        while not bound.wait(0.05):
            if time.monotonic() > deadline:
                break
        if proc.poll() is not None or not bound.is_set():
            proc.kill()
            proc.wait(5)
            assert proc.stderr is not None
            proc.stderr.close()
            return False
        for text in lines:
            if found := re.search(r"router bound to (\S+)", text):
                self.router = found.group(1)
            if found := re.search(r"pub bound to (\S+)", text):
                self.pub = found.group(1)
        self.proc = proc
        return True

    def kill(self) -> None:
        """kill -9: no goodbye, no last flush."""
        self._end(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: the broker holds its sockets but answers nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop for good (SIGTERM, then SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(10 * SCALE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


@dataclass
class Run:
    """One round: receivers that only read, senders fed lines from threads."""

    broker: ChaosBroker
    room: str = "chaos"
    client_args: tuple[str, ...] = ()
    prefix: tuple[str, ...] = ()
    receivers: dict[str, JsonClient] = field(default_factory=dict)
    senders: dict[str, JsonClient] = field(default_factory=dict)
    sent: dict[str, list[str]] = field(default_factory=dict)
    feeders: list[threading.Thread] = field(default_factory=list)

    def join(self, receivers: int, senders: int, tag: str = "") -> None:
        """Start the clients, receivers first, and wait until all are in."""
        for n in range(receivers):
            self.receivers[f"r{tag}{n}"] = self._client(f"r{tag}{n}")
        for n in range(senders):
            self.senders[f"s{tag}{n}"] = self._client(f"s{tag}{n}")
        for client in (*self.receivers.values(), *self.senders.values()):
            client.expect("welcome", timeout=15)

    def _client(self, nick: str) -> JsonClient:
        return start_json_client(
            self.broker.router,
            nick,
            "--room",
            self.room,
            "--drain-timeout",
            "60",
            *self.client_args,
            prefix=self.prefix,
        )

    def feed(self, lines: int, rate: float) -> None:
        """Each sender gets ``lines`` lines at ``rate`` per second, then end of input."""
        for nick, client in self.senders.items():
            texts = [line_text(nick, n) for n in range(lines)]
            self.sent[nick] = texts
            thread = threading.Thread(target=_feed, args=(client, texts, rate), daemon=True)
            thread.start()
            self.feeders.append(thread)

    def shown(self) -> int:
        """Lines the first receiver has shown so far (to time the faults)."""
        client = next(iter(self.receivers.values()))
        return sum(1 for e in list(client.log) if e.get("type") == "message")

    def wait_shown(self, count: int, timeout: float = 30) -> None:
        """Wait until the first receiver has shown ``count`` lines (or the feeding ended)."""
        eventually(
            lambda: self.shown() >= count or not self.feeding(), timeout, f"{count} lines shown"
        )

    def feeding(self) -> bool:
        """Whether some sender is still being given lines."""
        return any(thread.is_alive() for thread in self.feeders)

    def finish(self, timeout: float = 90) -> Figures:
        """Wait for the senders to exit and the receivers to show every
        acknowledged line (or the deadline), then leave and check."""
        eventually(lambda: not self.feeding(), timeout, "senders fed")
        eventually(
            lambda: all(c.proc.poll() is not None for c in self.senders.values()),
            timeout,
            "senders exited (all lines acknowledged or reported)",
        )
        statuses = {nick: c.proc.returncode for nick, c in self.senders.items()}
        senders = {nick: list(c.log) for nick, c in self.senders.items()}

        def complete() -> bool:
            return all(missing(self.sent, senders, c.log) == 0 for c in self.receivers.values())

        with contextlib.suppress(AssertionError):  # counted as lost and stuck by the checker
            eventually(complete, 30, "receivers showed every acknowledged line")
        for client in self.receivers.values():
            client.end_input()
        receivers: dict[str, list[Event]] = {}
        for nick, client in self.receivers.items():
            with contextlib.suppress(subprocess.TimeoutExpired):
                client.wait(15)
            receivers[nick] = list(client.log)
        figures = check(self.sent, senders, receivers)
        for nick, status in statuses.items():
            errors = [e for e in senders[nick] if e.get("type") == "error"]
            if errors:  # why, for the report
                codes = Counter(f"{e.get('req')}:{e.get('code')}" for e in errors)
                figures.problems.append(f"{nick}: errors {dict(codes)}; first {errors[0]}")
            # 3 exactly when the sender reported a line undelivered (README).
            if status != (3 if _reported(senders[nick]) else 0):
                figures.bad_exits += 1
                figures.problems.append(f"{nick} exited {status}")
        return figures

    def close(self) -> None:
        """Kill whatever still runs and release every pipe."""
        for client in (*self.receivers.values(), *self.senders.values()):
            client.stop()


#: What a client says when it has no broker: it lost it, or it is waiting
#: for its old session to let go of its nickname (``reconnected`` ends both).
WITHOUT_BROKER = ("reconnecting", "waiting_for_nick")


@dataclass(frozen=True)
class Link:
    """What one client has said about its link to the broker."""

    losses: int  # how often it said it lost the broker
    lost: bool  # whether its latest word is that it has none

    def noticed_since(self, before: Link) -> bool:
        """Whether it has noticed a loss after ``before``: it said so again, or
        it had already lost the broker then and has not been back since (it
        cannot say so again: a broker starved on a loaded machine can fall
        silent for longer than a client's limit just before the kill)."""
        return self.losses > before.losses or (before.lost and self.lost)


def link(log: list[Event]) -> Link:
    """What a client's event log says about its link."""
    states = [e["state"] for e in log if e.get("type") == "connection"]
    return Link(states.count("reconnecting"), bool(states) and states[-1] in WITHOUT_BROKER)


def _reported(events: list[Event]) -> bool:
    return any(e.get("type") == "error" and e.get("key") for e in events)


def _feed(client: JsonClient, texts: list[str], rate: float) -> None:
    interval = 1 / rate
    start = time.monotonic()
    try:
        for n, text in enumerate(texts):
            # Paced against the start, so a slow write does not slow the rate.
            delay = start + n * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            client.send(text)
        client.end_input()
    except (BrokenPipeError, ValueError):
        pass  # the client died: the checker counts what is missing
