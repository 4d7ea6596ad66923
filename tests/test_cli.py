"""The installed console scripts as subprocesses: ``chat-client --json`` end to
end, ``python -m broker`` / ``python -m client``, a client killed with -9, the
broker's SIGTERM, its log, and usage errors."""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.conftest import SCALE, BrokerProcess, script, spawn_broker

Event = dict[str, Any]


@dataclass
class JsonClient:
    """``chat-client --json`` in a subprocess: lines in, JSON events out."""

    proc: subprocess.Popen[bytes]
    events: queue.Queue[Event] = field(default_factory=queue.Queue)
    errors: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

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


def start_json_client(server: str, nick: str | None, *args: str) -> JsonClient:
    command = [script("chat-client"), "--json", "--server", server, *args]
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


@pytest.fixture
def clients() -> Iterator[Callable[..., JsonClient]]:
    """Start ``chat-client --json`` processes; all stopped at the end."""
    made: list[JsonClient] = []

    def make(server: str, nick: str | None, *args: str) -> JsonClient:
        client = start_json_client(server, nick, *args)
        made.append(client)
        return client

    yield make
    for client in made:
        client.stop()


@pytest.fixture
def fast_broker() -> Iterator[BrokerProcess]:
    """``chat-broker`` with a 1 s client timeout, so deaths show quickly."""
    handle = spawn_broker("--client-timeout", "1", "--log-level", "DEBUG")
    yield handle
    handle.stop()


def run(*command: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout * SCALE,
        check=False,
    )


# --- JSON mode end to end ------------------------------------------------------------------


@pytest.mark.timeout(40)
def test_json_mode_end_to_end(
    fast_broker: BrokerProcess, clients: Callable[..., JsonClient]
) -> None:
    alice = clients(fast_broker.router, "alice")
    assert alice.expect("welcome").items() >= {"nick": "alice", "room": "lobby"}.items()
    bob = clients(fast_broker.router, "bob", "--room", "#Lobby")
    assert bob.expect("welcome")["room"] == "lobby"
    join = alice.expect("join")
    assert (join["room"], join["nick"]) == ("lobby", "bob")

    bob.send("hello, alice")
    line = alice.expect("message")
    assert {k: line[k] for k in ("room", "nick", "text", "seq")} == {
        "room": "lobby",
        "nick": "bob",
        "text": "hello, alice",
        "seq": 1,
    }
    assert isinstance(line["ts"], float) and isinstance(line["id"], str) and line["id"]

    bob.send("/msg alice just between us")
    private = alice.expect("private")
    assert {k: private[k] for k in ("nick", "to", "text")} == {
        "nick": "bob",
        "to": "alice",
        "text": "just between us",
    }
    assert isinstance(private["ts"], float) and private["id"]

    bob.send("/nick robert")
    assert alice.expect("nick").items() >= {"old": "bob", "new": "robert"}.items()
    bob.send("/nick ALICE")
    error = bob.expect("error")
    assert error["code"] == "nick_taken" and error["message"]

    bob.send("/join dev")
    assert bob.expect("joined")["room"] == "dev"
    bob.send("/who lobby")
    assert sorted(bob.expect("who")["members"]) == ["alice", "robert"]
    bob.send("/rooms")
    rooms = bob.expect("rooms")["rooms"]
    assert {(r["room"], r["members"]) for r in rooms} == {("lobby", 2), ("dev", 1)}

    bob.end_input()  # end of input leaves cleanly
    assert bob.wait() == 0
    leaves = [alice.expect("leave")]
    assert (leaves[0]["nick"], leaves[0]["reason"]) == ("robert", "exit")

    alice.send("/exit")
    assert alice.wait() == 0
    fast_broker.wait_for_log(r"robert left \(exit\)")
    fast_broker.wait_for_log(r"alice left \(exit\)")


@pytest.mark.timeout(40)
def test_json_mode_topics_and_away(
    fast_broker: BrokerProcess, clients: Callable[..., JsonClient]
) -> None:
    alice = clients(fast_broker.router, "alice", "--backlog", "0")
    alice.expect("welcome")
    alice.send("/topic plans \x1b for friday")
    topic = alice.expect("topic")
    assert topic.items() >= {"room": "lobby", "nick": "alice", "changed": True}.items()
    assert topic["text"] == "plans \x1b for friday"  # kept; \u001b in the JSON
    bob = clients(fast_broker.router, "bob", "--backlog", "0")
    assert bob.expect("welcome")["topic"] == "plans \x1b for friday"
    bob.send("/away gone fishing")
    assert alice.expect("away") == {"type": "away", "nick": "bob", "text": "gone fishing"}
    alice.send("/msg bob are you there?")
    assert alice.expect("away", lambda e: e.get("auto") is True)["text"] == "gone fishing"
    alice.send("/who")
    assert alice.expect("who")["away"] == {"bob": "gone fishing"}
    bob.send("/back")
    assert alice.expect("away") == {"type": "away", "nick": "bob", "text": ""}
    bob.send("/topic")
    answer = bob.expect("topic")
    assert answer["nick"] == "alice" and "changed" not in answer
    for client in (alice, bob):
        client.send("/exit")
        assert client.wait() == 0


@pytest.mark.parametrize(("nick", "code"), [("alice", "nick_taken"), ("no spaces", "nick_invalid")])
def test_json_mode_refused_nickname_exits_2(
    fast_broker: BrokerProcess, clients: Callable[..., JsonClient], nick: str, code: str
) -> None:
    alice = clients(fast_broker.router, "Alice")
    alice.expect("welcome")
    refused = clients(fast_broker.router, nick)
    error = refused.expect("error")
    assert error["code"] == code and error["message"]
    assert refused.wait() == 2


def test_json_mode_without_nick_exits_2(clients: Callable[..., JsonClient]) -> None:
    client = clients("tcp://127.0.0.1:9", None)  # never contacted
    assert client.expect("error")["code"] == "nick_invalid"
    assert client.wait() == 2


@pytest.mark.timeout(40)
def test_json_mode_unreachable_broker_exits_1(clients: Callable[..., JsonClient]) -> None:
    # A TCP port that accepts connections but never speaks ZeroMQ: held open by
    # us, so no other process can take it meanwhile.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        client = clients(f"tcp://127.0.0.1:{port}", "alice", "--connect-timeout", "1.5")
        error = client.expect("error", timeout=20)
        assert error["code"] == "unreachable" and "1.5 s" in error["message"]
        assert client.wait() == 1
        assert time.monotonic() - started < 10 * SCALE


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--connect-timeout", "0"), ("--connect-timeout", "soon"), ("--backlog", "-1")],
)
def test_bad_client_flag_values_are_usage_errors(flag: str, value: str) -> None:
    result = run(script("chat-client"), "--json", "--nick", "x", flag, value)
    assert result.returncode == 2
    assert flag in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("how", ["sigint", "sigterm", "no-stdin"])
def test_json_mode_interrupt_or_no_input_leaves_cleanly(
    fast_broker: BrokerProcess, clients: Callable[..., JsonClient], how: str
) -> None:
    alice = clients(fast_broker.router, "alice")
    alice.expect("welcome")
    bob = clients(fast_broker.router, "bob")
    bob.expect("welcome")
    if how == "no-stdin":
        bob.end_input()
    else:
        bob.proc.send_signal(signal.SIGINT if how == "sigint" else signal.SIGTERM)
    leave = alice.expect("leave")
    assert (leave["nick"], leave["reason"]) == ("bob", "exit")
    assert bob.wait() == 0, "".join(bob.errors)


# --- processes that die, brokers that stop -----------------------------------------------------


@pytest.mark.timeout(40)
def test_a_killed_client_times_out_and_frees_its_nickname(
    fast_broker: BrokerProcess, clients: Callable[..., JsonClient]
) -> None:
    alice = clients(fast_broker.router, "alice")
    alice.expect("welcome")
    victim = clients(fast_broker.router, "victim")
    victim.expect("welcome")
    alice.expect("join", lambda e: e["nick"] == "victim")
    started = time.monotonic()
    victim.proc.send_signal(signal.SIGKILL)
    leave = alice.expect("leave", timeout=5)
    elapsed = time.monotonic() - started
    assert (leave["nick"], leave["reason"]) == ("victim", "timeout")
    assert elapsed < 1.0 + 1.5 * SCALE  # --client-timeout 1, plus ticks and heartbeats
    fast_broker.wait_for_log(r"victim timed out")
    again = clients(fast_broker.router, "Victim")
    assert again.expect("welcome")["nick"] == "Victim"


@pytest.mark.timeout(40)
def test_broker_sigterm_tells_clients(clients: Callable[..., JsonClient]) -> None:
    broker = spawn_broker("--client-timeout", "2")
    try:
        alice = clients(broker.router, "alice")
        alice.expect("welcome")
        assert broker.stop(signal.SIGTERM) == 0
        assert alice.expect("shutdown")["reason"]
        broker.wait_for_log("telling 1 clients the broker is shutting down")
        broker.wait_for_log("broker stopped")
    finally:
        broker.stop(signal.SIGKILL)


# --- the broker's log and flags ------------------------------------------------------------------


def test_broker_logs_endpoints_joins_leaves_and_errors(
    fast_broker: BrokerProcess, clients: Callable[..., JsonClient]
) -> None:
    assert fast_broker.router.startswith("tcp://127.0.0.1:")
    assert fast_broker.pub.startswith("tcp://127.0.0.1:")
    alice = clients(fast_broker.router, "alice")
    alice.expect("welcome")
    fast_broker.wait_for_log(r"alice joined")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    rogue = ctx.socket(zmq.DEALER)
    try:
        rogue.connect(fast_broker.router)
        rogue.send(b"this is not json")
        assert rogue.poll(int(5000 * SCALE)), "no error reply"
        assert json.loads(rogue.recv())["code"] == "bad_frame"
    finally:
        rogue.close(linger=0)
        ctx.term()
    fast_broker.wait_for_log(r"refused .*bad_frame")
    alice.end_input()
    assert alice.wait() == 0
    fast_broker.wait_for_log(r"alice left \(exit\)")


def test_log_level_warning_silences_info(tmp_path: Path) -> None:
    # The router on an ipc:// path, so the test can reach a broker whose log
    # (at WARNING) never says where it bound.
    router = f"ipc://{tmp_path}/router"
    proc = subprocess.Popen(
        [
            *(script("chat-broker"), "--log-level", "WARNING", "--history", ":memory:"),
            *("--router", router, "--pub", "tcp://127.0.0.1:*"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    try:
        dealer.connect(router)
        dealer.send(b'{"type": "ping"}')  # refused (not joined), logged at INFO
        assert dealer.poll(int(10_000 * SCALE)), "the broker never answered"
        assert json.loads(dealer.recv())["code"] == "not_joined"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10 * SCALE) == 0
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        assert "bound to" not in log and "refused" not in log and "INFO" not in log
    finally:
        dealer.close(linger=0)
        ctx.term()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


def test_python_m_broker_runs() -> None:
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "broker", "--history", ":memory:"),
            *("--router", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        lines = []
        deadline = time.monotonic() + 10 * SCALE
        while time.monotonic() < deadline:
            line = proc.stderr.readline().decode()
            lines.append(line)
            if "pub bound to" in line or not line:
                break
        assert any("router bound to tcp://127.0.0.1:" in x for x in lines), lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10 * SCALE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.parametrize(
    ("module", "flags"),
    [
        ("broker", ["--router", "--pub", "--client-timeout", "--log-level"]),
        ("client", ["--server", "--nick", "--room", "--pub", "--json"]),
    ],
)
def test_python_m_help(module: str, flags: list[str]) -> None:
    done = run(sys.executable, "-m", module, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")
    for flag in flags:
        assert flag in done.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["chat-broker", "--no-such-flag"],
        ["chat-broker", "--client-timeout", "0"],
        ["chat-broker", "--client-timeout", "soon"],
        ["chat-broker", "--log-level", "LOUD"],
        ["chat-client", "--no-such-flag"],
        ["chat-client", "--json", "--nick"],
    ],
)
def test_bad_flags_are_usage_errors(command: list[str]) -> None:
    done = run(script(command[0]), *command[1:])
    assert done.returncode == 2
    assert "usage:" in done.stderr
