"""The bots in examples/: each run as its own process against a real
``chat-broker``, exercised by a Client, stopped with SIGTERM, checked to leave
and exit 0. Their handlers are also checked offline with the BotHarness."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from client import Client
from client import events as ev
from client.testing import BotHarness
from tests.conftest import BIN, SCALE, BrokerProcess, wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def example(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run an example; it is killed at the end if the test did not stop it."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def python_example(name: str, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / f"{name}.py"), *args]


def stop_and_check(
    proc: subprocess.Popen[bytes], watcher: Client, nick: str, log: Path, sig: int = signal.SIGTERM
) -> None:
    """SIGTERM (or ``sig``): the example must leave (others see ``exit``) and exit 0."""
    proc.send_signal(sig)
    wait_for(watcher, ev.Leave, lambda e: e.nick == nick and e.reason == "exit", timeout=10)
    try:
        status = proc.wait(10 * SCALE)
    except subprocess.TimeoutExpired:
        raise AssertionError("the example did not exit on SIGTERM:\n" + log.read_text()) from None
    assert status == 0, log.read_text()


@contextmanager
def watching(broker: BrokerProcess, nick: str, room: str = "lobby") -> Iterator[Client]:
    client = Client(broker.router, nick, room, backlog=0)
    client.connect(timeout=5 * SCALE)
    try:
        yield client
    finally:
        client.close()


def joined(client: Client, nick: str) -> None:
    wait_for(client, ev.Join, lambda e: e.nick == nick, timeout=15)


def line_from(client: Client, nick: str) -> ev.Message:
    return wait_for(client, ev.Message, lambda e: e.nick == nick, timeout=10)


# --- offline: the handlers through the harness -----------------------------------


def test_dice_rolls_are_validated() -> None:
    harness = BotHarness(_load("dice_bot").build_bot("tcp://127.0.0.1:1", seed=7))
    [line] = harness.say_sync("alice", "!roll 3d6")
    found = re.fullmatch(r"alice: 3d6: (\d) \+ (\d) \+ (\d) = (\d+)", line.text)
    assert found is not None, line.text
    values = [int(v) for v in found.groups()]
    assert all(1 <= v <= 6 for v in values[:3]) and sum(values[:3]) == values[3]
    assert re.fullmatch(r"alice: 1d20: \d+", harness.say_sync("alice", "!roll d20")[0].text)
    [hundred] = harness.say_sync("alice", "!roll 100d1000")
    assert hundred.text.count("+") == 99
    for bad in ["", "0d6", "101d6", "2d1", "2d1001", "two dice", "2d6+1", "-1d6"]:
        [answer] = harness.say_sync("alice", f"!roll {bad}")
        assert "roll dice like this: !roll 2d6" in answer.text, (bad, answer.text)


def test_bridge_marks_origin_and_skips_relayed_lines() -> None:
    harness = BotHarness(_load("bridge_bot").build_bot("tcp://127.0.0.1:1", ["#Lobby", "dev"]))
    [line] = harness.say_sync("alice", "hi all", room="lobby")
    assert (line.target, line.text) == ("dev", "[lobby] alice: hi all")
    [line] = harness.say_sync("bob", "waves", room="dev", action=True)
    assert (line.target, line.text) == ("lobby", "[dev] * bob waves")
    assert harness.say_sync("bridge", "[lobby] alice: hi all", room="dev") == []
    assert harness.say_sync("bridge2", "[lobby] alice: hi all", room="dev") == []


# --- each example as a process against a real broker ----------------------------------


@pytest.mark.timeout(60 * SCALE)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_echo_bot(chat_broker: BrokerProcess, tmp_path: Path, sig: int) -> None:
    log = tmp_path / "echo.log"
    with (
        watching(chat_broker, "alice") as alice,
        example(
            python_example("echo_bot", "--server", chat_broker.router, "--nick", "echo"), log
        ) as proc,
    ):
        joined(alice, "echo")
        alice.say("!echo hello, world")
        line = line_from(alice, "echo")
        assert (line.room, line.text) == ("lobby", "hello, world")
        stop_and_check(proc, alice, "echo", log, sig)


@pytest.mark.timeout(60 * SCALE)
def test_dice_bot(chat_broker: BrokerProcess, tmp_path: Path) -> None:
    log = tmp_path / "dice.log"
    command = python_example("dice_bot", "--server", chat_broker.router, "--room", "games")
    with watching(chat_broker, "alice", "games") as alice, example(command, log) as proc:
        joined(alice, "dice")
        alice.say("!roll 2d6")
        assert re.fullmatch(r"alice: 2d6: \d \+ \d = \d+", line_from(alice, "dice").text)
        alice.say("!roll 500d6")
        assert "roll dice like this" in line_from(alice, "dice").text
        stop_and_check(proc, alice, "dice", log)


@pytest.mark.timeout(60 * SCALE)
def test_logger_bot(chat_broker: BrokerProcess, tmp_path: Path) -> None:
    log, out = tmp_path / "logger.log", tmp_path / "chat.jsonl"
    command = python_example(
        "logger_bot", "--server", chat_broker.router, "--file", str(out), "--room", "lobby"
    )
    with watching(chat_broker, "alice") as alice, example(command, log) as proc:
        joined(alice, "logger")
        bob = Client(chat_broker.router, "bob", "lobby")
        bob.connect(timeout=5 * SCALE)
        bob.say('first "line" ünïcode')
        bob.say("second line")
        bob.close()
        wait_for(alice, ev.Leave, lambda e: e.nick == "bob")
        # Every line is flushed at once: poll the file for the leave.
        deadline = time.monotonic() + 10 * SCALE
        while '"leave"' not in out.read_text("utf-8") and time.monotonic() < deadline:
            time.sleep(0.05)
        stop_and_check(proc, alice, "logger", log)
    records = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert [(r["type"], r["nick"], r.get("text")) for r in records] == [
        ("join", "bob", None),
        ("message", "bob", 'first "line" ünïcode'),
        ("message", "bob", "second line"),
        ("leave", "bob", None),
    ]
    assert all(r["room"] == "lobby" for r in records)


@pytest.mark.timeout(60 * SCALE)
def test_bridge_bot(chat_broker: BrokerProcess, tmp_path: Path) -> None:
    log = tmp_path / "bridge.log"
    command = python_example("bridge_bot", "--server", chat_broker.router, "--rooms", "a", "b")
    with (
        watching(chat_broker, "alice", "a") as alice,
        watching(chat_broker, "bob", "b") as bob,
        example(command, log) as proc,
    ):
        joined(alice, "bridge")
        joined(bob, "bridge")
        alice.say("hello from a")
        assert line_from(bob, "bridge").text == "[a] alice: hello from a"
        bob.say("hello from b")
        assert line_from(alice, "bridge").text == "[b] bob: hello from b"
        # No loop: the bridge's own lines come back to nobody.
        with pytest.raises(AssertionError):
            wait_for(alice, ev.Message, lambda e: e.nick == "bridge", timeout=0.5)
        with pytest.raises(AssertionError):
            wait_for(bob, ev.Message, lambda e: e.nick == "bridge", timeout=0.5)
        stop_and_check(proc, alice, "bridge", log)


@pytest.mark.timeout(60 * SCALE)
def test_chat_sh_answers_date(chat_broker: BrokerProcess, tmp_path: Path) -> None:
    log = tmp_path / "chat.log"
    # chat-client is found on the PATH, as a user would have it.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("CHAT_CLIENT", None)
    command = ["bash", str(EXAMPLES / "chat.sh"), "--server", chat_broker.router]
    with watching(chat_broker, "alice") as alice, example(command, log, env) as proc:
        joined(alice, "datebot")
        alice.say("!date")
        text = line_from(alice, "datebot").text
        assert re.fullmatch(r"alice: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+", text), text
        alice.say("!dates are not a command")
        with pytest.raises(AssertionError):
            wait_for(alice, ev.Message, lambda e: e.nick == "datebot", timeout=0.5)
        stop_and_check(proc, alice, "datebot", log)


def test_logger_bot_says_why_it_cannot_open_its_file(tmp_path: Path) -> None:
    # A mistyped directory is a usage error in one line, not a traceback
    # (it happens before any broker is asked).
    path = tmp_path / "no-such-dir" / "chat.jsonl"
    done = subprocess.run(
        python_example("logger_bot", "--server", "tcp://127.0.0.1:1", "--file", str(path)),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=20 * SCALE,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"--file: cannot open {path}: No such file or directory" in done.stderr
