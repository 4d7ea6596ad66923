"""The installed console scripts as subprocesses: ``chat-client --json`` end to
end, ``python -m broker`` / ``python -m client``, a client killed with -9, the
broker's SIGTERM, its log, and usage errors."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.conftest import SCALE, BrokerProcess, has_ipv6_loopback, script, spawn_broker
from tests.jsonclient import Event, JsonClient, start_json_client


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


@contextmanager
def _logging(*command: str) -> Iterator[subprocess.Popen[bytes]]:
    """A broker started as ``command``, its log (stderr) piped to the test;
    killed at the end if it still runs."""
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


def _raw_answer(router: str, frame: bytes, within: float, silence: str) -> dict[str, Any]:
    """What the broker at ``router`` answers a raw ``frame`` sent from a
    DEALER of our own; fails with ``silence`` after ``within`` seconds."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    try:
        dealer.connect(router)
        dealer.send(frame)
        assert dealer.poll(int(within * 1000 * SCALE)), silence
        answer: dict[str, Any] = json.loads(dealer.recv())
        return answer
    finally:
        dealer.close(linger=0)
        ctx.term()


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
    answer = _raw_answer(fast_broker.router, b"this is not json", 5, "no error reply")
    assert answer["code"] == "bad_frame"
    fast_broker.wait_for_log(r"refused .*bad_frame")
    alice.end_input()
    assert alice.wait() == 0
    fast_broker.wait_for_log(r"alice left \(exit\)")


def test_log_level_warning_silences_info(tmp_path: Path) -> None:
    # The router on an ipc:// path, so the test can reach a broker whose log
    # (at WARNING) never says where it bound.
    router = f"ipc://{tmp_path}/router"
    with _logging(
        *(script("chat-broker"), "--log-level", "WARNING", "--history", ":memory:"),
        *("--router", router, "--pub", "tcp://127.0.0.1:*"),
    ) as proc:
        # A ping before joining: refused (not joined), logged at INFO.
        answer = _raw_answer(router, b'{"type": "ping"}', 10, "the broker never answered")
        assert answer["code"] == "not_joined"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10 * SCALE) == 0
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        assert "bound to" not in log and "refused" not in log and "INFO" not in log


def test_python_m_broker_runs() -> None:
    with _logging(
        *(sys.executable, "-m", "broker", "--history", ":memory:"),
        *("--router", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*"),
    ) as proc:
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


# --- scripts: order, end of input, exit status, unread output (issue 12, items 5, 6, 8) ----


def run_script(
    server: str, nick: str, lines: str, *args: str, timeout: float = 30
) -> tuple[int, list[Event]]:
    """Pipe ``lines`` into ``chat-client --json`` and read every event it prints."""
    result = subprocess.run(
        [script("chat-client"), "--json", "--server", server, "--nick", nick, *args],
        input=lines.encode(),
        capture_output=True,
        timeout=timeout * SCALE,
        check=False,
    )
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    return result.returncode, [json.loads(raw) for raw in result.stdout.splitlines()]


@pytest.mark.timeout(40)
def test_json_commands_that_depend_on_earlier_ones_wait_for_them(
    chat_broker: BrokerProcess,
) -> None:
    # Each command needs the answer to the one before: /part and /history the
    # join, the second /join the part, /who the room it asks about.
    status, events = run_script(
        chat_broker.router,
        "alice",
        "/join ops\n/part ops\n/join #OPS\n/history 5\n/who\n/nick al\n/who\nhello\n",
    )
    assert status == 0, events
    assert [e["type"] for e in events if e["type"] != "message"] == [
        "welcome",
        "joined",
        "parted",
        "joined",
        "history_end",
        "who",
        "nick",
        "who",
    ]
    assert [e["members"] for e in events if e["type"] == "who"] == [["alice"], ["al"]]
    said = [e for e in events if e["type"] == "message"]
    assert [(e["room"], e["nick"], e["text"]) for e in said] == [("ops", "al", "hello")]


def _forty_lines_at_the_flood_limit(
    clients: Callable[..., JsonClient], write: Callable[[str, str], None]
) -> None:
    """``write(router, lines)`` pipes 40 lines into a client that leaves at
    the end of its input, and checks how it ended; a reader must then get
    every line, in order. The broker's default flood limit (5 lines/s, burst
    10) lets 40 lines through in about 6 s, longer than any fixed wait at
    the end."""
    broker = spawn_broker("--client-timeout", "3")
    try:
        reader = clients(broker.router, "reader")
        reader.expect("welcome")
        write(broker.router, "".join(f"line {n}\n" for n in range(40)))
        texts = [reader.expect("message", timeout=10)["text"] for _ in range(40)]
        assert texts == [f"line {n}" for n in range(40)]
    finally:
        broker.stop()


@pytest.mark.timeout(60)
def test_json_end_of_input_sends_every_line_at_the_flood_limit(
    clients: Callable[..., JsonClient],
) -> None:
    def write(router: str, lines: str) -> None:
        status, events = run_script(router, "writer", lines)
        assert status == 0, [e for e in events if e["type"] == "error"]
        assert not [e for e in events if e["type"] == "error"]

    _forty_lines_at_the_flood_limit(clients, write)


@pytest.mark.timeout(60)
def test_a_pipe_into_line_mode_sends_every_line_at_the_flood_limit(
    clients: Callable[..., JsonClient],
) -> None:
    # As above without --json: leaving waited a fixed 5 s, so the last of
    # 40 lines paced at 5 lines/s after a burst of 10 were reported not sent.
    def write(router: str, lines: str) -> None:
        done = subprocess.run(
            [script("chat-client"), "--server", router, "--nick", "writer"],
            input=lines.encode(),
            capture_output=True,
            timeout=30 * SCALE,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert b"not delivered" not in done.stdout, done.stdout.decode()

    _forty_lines_at_the_flood_limit(clients, write)


@pytest.mark.timeout(40)
def test_json_lines_not_delivered_make_the_exit_status_3(
    clients: Callable[..., JsonClient],
) -> None:
    broker = spawn_broker("--client-timeout", "30")
    try:
        client = clients(broker.router, "alice", "--drain-timeout", "1")
        client.expect("welcome")
        broker.proc.send_signal(signal.SIGSTOP)  # nothing will be acknowledged
        client.send("one")
        client.send("two")
        client.end_input()
        lost = [client.expect("error", timeout=10) for _ in range(2)]
        assert [(e["code"], e["text"]) for e in lost] == [
            ("not_delivered", "one"),
            ("not_delivered", "two"),
        ]
        assert all(e["key"] for e in lost)
        assert client.wait(15) == 3
    finally:
        broker.proc.send_signal(signal.SIGCONT)
        broker.stop()


@pytest.mark.timeout(60)
def test_json_client_whose_stdout_is_not_read_stays_alive_and_counts_what_it_drops(
    clients: Callable[..., JsonClient],
) -> None:
    broker = spawn_broker("--client-timeout", "1", "--max-rate", "0")
    proc = subprocess.Popen(
        [
            script("chat-client"),
            "--json",
            "--server",
            broker.router,
            "--nick",
            "sleepy",
            "--output-buffer",
            "20000",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert json.loads(proc.stdout.readline())["type"] == "welcome"
        # Far more than the pipe (64 KiB) and our buffer (20,000 bytes) hold.
        flood = 3000
        writer = clients(broker.router, "writer")
        writer.expect("welcome")
        for n in range(flood):
            writer.send(f"{n:05d} " + "x" * 80)
        writer.expect("message", lambda e: e["text"].startswith(f"{flood - 1:05d}"), timeout=30)
        # Unread, for several of the broker's client timeouts (1 s): the
        # session must go on (heartbeats), not be dropped as `timeout`.
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            assert not any("sleepy timed out" in line for line in broker.log), broker.log
            time.sleep(0.1)
        writer.send("/who")
        assert "sleepy" in writer.expect("who")["members"]
        proc.stdin.write(b"/exit\n")
        proc.stdin.close()
        events = [json.loads(raw) for raw in proc.stdout]
        assert proc.wait(15 * SCALE) == 4
        seen = [e for e in events if e["type"] == "message"]
        dropped = sum(e["dropped"] for e in events if e["type"] == "overflow")
        assert 0 < len(seen) < flood and dropped > 0
        assert len(seen) + dropped >= flood
        numbers = [int(e["text"][:5]) for e in seen]
        assert numbers == sorted(numbers)  # what is written keeps its order
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()
        broker.stop()


@pytest.mark.timeout(40)
@pytest.mark.skipif(not has_ipv6_loopback(), reason="this host has no IPv6 (cannot bind ::1)")
@pytest.mark.parametrize("pub", ["tcp://[::1]:*", "tcp://[::]:*"], ids=["loopback", "wildcard"])
def test_the_client_talks_to_a_broker_on_ipv6(clients: Callable[..., JsonClient], pub: str) -> None:
    # docs/PROTOCOL.md §1: a bracketed IPv6 endpoint needs ZMQ_IPV6 on the
    # client's sockets too (before: `--server tcp://[::1]:...` never
    # connected). A wildcard pub ("tcp://[::]:port" in the welcome) is
    # reached on the router's host, in brackets.
    broker = spawn_broker(router="tcp://[::1]:*", pub=pub)
    try:
        assert broker.router.startswith("tcp://[::1]:")
        alice = clients(broker.router, "alice6")
        bob = clients(broker.router, "bob6")
        alice.expect("welcome", timeout=10)
        bob.expect("welcome", timeout=10)
        alice.send("over six")
        shown = bob.expect("message", lambda e: e.get("text") == "over six", timeout=10)
        assert shown["nick"] == "alice6"
        alice.end_input()
        assert alice.wait(10) == 0
    finally:
        broker.stop()


# --- several brokers (issue 14: failover) -------------------------------------


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--server", "tcp://127.0.0.1:1", "--server", "nonsense"], "--server: bad endpoint"),
        (["--server", "tcp://127.0.0.1:1,tcp://nowhere"], "--server: bad endpoint"),
        (
            ["--server", "tcp://127.0.0.1:1,tcp://127.0.0.1:2", "--pub", "tcp://127.0.0.1:3"],
            "--pub cannot be used with several --server",
        ),
    ],
)
def test_a_bad_server_list_is_refused_in_one_line(args: list[str], complaint: str) -> None:
    done = subprocess.run(
        [script("chat-client"), "--json", "--nick", "x", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20 * SCALE,
    )
    assert done.returncode == 2
    assert complaint in done.stderr and "Traceback" not in done.stderr


def test_a_broker_down_at_start_is_passed_over_for_the_next(chat_broker: BrokerProcess) -> None:
    with socket.socket() as hole:  # a port nobody answers on
        hole.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{hole.getsockname()[1]}"
        # one comma-separated --server: with two of them, the old client took the last
        client = start_json_client(f"{dead},{chat_broker.router}", "late")
        try:
            client.expect("welcome", timeout=10)
        finally:
            client.stop()
