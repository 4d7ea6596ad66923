"""``chat-client --json`` in a subprocess, for the CLI tests and the chaos suite."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import SCALE, script

__all__ = ["Event", "JsonClient", "start_json_client"]

Event = dict[str, Any]


@dataclass
class JsonClient:
    """``chat-client --json`` in a subprocess: lines in, JSON events out."""

    proc: subprocess.Popen[bytes]
    events: queue.Queue[Event] = field(default_factory=queue.Queue)
    errors: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    #: Every event printed so far, in order (``events`` is consumed by expect()).
    log: list[Event] = field(default_factory=list)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def end_input(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def expect(
        self, kind: str, predicate: Callable[[Event], bool] = lambda e: True, timeout: float = 5
    ) -> Event:
        """The next event of type ``kind`` matching ``predicate``."""
        deadline = time.monotonic() + timeout * SCALE
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            if event.get("type") == kind and predicate(event):
                return event
        raise AssertionError(
            f"no {kind!r} event within {timeout} s; stderr:\n" + "".join(self.errors)
        )

    def wait(self, timeout: float = 5) -> int:
        return self.proc.wait(timeout * SCALE)

    def stop(self) -> None:
        """Kill if still running and release every pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for thread in self.threads:
            thread.join(5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


def start_json_client(
    server: str, nick: str | None, *args: str, prefix: tuple[str, ...] = ()
) -> JsonClient:
    """Start the client; ``prefix`` runs it through another command
    (``ip netns exec NAME``)."""
    command = [*prefix, script("chat-client"), "--json", "--server", server, *args]
    if nick is not None:
        command += ["--nick", nick]
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    client = JsonClient(proc)

    def read_stdout() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                event = {"type": "not-json", "line": raw.decode("utf-8", "replace")}
            client.log.append(event)
            client.events.put(event)

    def read_stderr() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            client.errors.append(raw.decode("utf-8", "replace"))

    for target in (read_stdout, read_stderr):
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        client.threads.append(thread)
    return client
