"""examples/raw_bot.py, the pyzmq-only bot, against the real ``chat-broker``."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from client import Client
from client import events as ev
from tests.conftest import SCALE, BrokerProcess, wait_for

RAW_BOT = Path(__file__).resolve().parent.parent / "examples" / "raw_bot.py"
PROJECT_PACKAGES = {"protocol", "client", "broker", "tests", "examples", "msgspec"}


def start_bot(tmp_path: Path, router: str, *args: str) -> subprocess.Popen[bytes]:
    """Run the bot in isolated mode (``-I``: no script directory or cwd on
    sys.path, no PYTHON* variables) from an empty directory."""
    out = (tmp_path / "bot.out").open("wb")
    err = (tmp_path / "bot.err").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-I", str(RAW_BOT), "--server", router, *args],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    finally:
        out.close()  # the child holds its own copies
        err.close()


def stop_bot(bot: subprocess.Popen[bytes]) -> int:
    """Wait for the bot to end (killing it if it will not); returns its status."""
    try:
        return bot.wait(10 * SCALE)
    except subprocess.TimeoutExpired:
        bot.kill()
        return bot.wait(5)


def test_raw_bot_imports_only_pyzmq_and_the_standard_library() -> None:
    tree = ast.parse(RAW_BOT.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            assert node.module is not None
            imported.add(node.module.split(".")[0])
    assert "zmq" in imported
    assert not imported & PROJECT_PACKAGES
    outside = imported - set(sys.stdlib_module_names) - {"zmq", "__future__"}
    assert not outside, f"raw_bot imports {outside}"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_raw_bot_answers_ping_and_leaves_cleanly(
    chat_broker: BrokerProcess, tmp_path: Path, sig: signal.Signals
) -> None:
    with Client(chat_broker.router, "alice") as alice:
        bot = start_bot(tmp_path, chat_broker.router, "--nick", "PingBot")
        try:
            wait_for(alice, ev.Join, lambda e: e.nick == "PingBot", timeout=10)
            alice.say("!ping")
            reply = wait_for(alice, ev.Message, lambda e: e.nick == "PingBot")
            assert (reply.text, reply.room) == ("pong", "lobby")
        finally:
            bot.send_signal(sig)  # once only: a second could hit the exiting interpreter
        leave = wait_for(alice, ev.Leave, lambda e: e.nick == "PingBot")
        assert leave.reason == "exit"
        status = stop_bot(bot)
    assert status == 0
    assert "joined lobby as PingBot" in (tmp_path / "bot.out").read_text()


@pytest.mark.timeout(30)
def test_raw_bot_answers_in_the_room_it_was_asked_in(
    chat_broker: BrokerProcess, tmp_path: Path
) -> None:
    with Client(chat_broker.router, "carol", "#Dev") as carol:
        bot = start_bot(tmp_path, chat_broker.router, "--room", "#DEV")
        try:
            wait_for(carol, ev.Join, lambda e: e.nick == "pingbot", timeout=10)
            carol.say("  !ping  ")
            reply = wait_for(carol, ev.Message, lambda e: e.nick == "pingbot")
            assert (reply.text, reply.room) == ("pong", "dev")
        finally:
            bot.send_signal(signal.SIGTERM)
            assert stop_bot(bot) == 0


@pytest.mark.timeout(30)
def test_raw_bot_exits_2_when_its_nickname_is_taken(
    chat_broker: BrokerProcess, tmp_path: Path
) -> None:
    with Client(chat_broker.router, "Taken"):
        bot = start_bot(tmp_path, chat_broker.router, "--nick", "taken")
        assert stop_bot(bot) == 2
    error = (tmp_path / "bot.err").read_text()
    assert "nick_taken" in error and "'taken'" in error
