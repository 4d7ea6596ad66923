"""The interactive ``chat-client`` driven like a person would, in a pseudo-terminal.

Each test runs the installed console script under pexpect (TERM=xterm, 24x80)
against a real ``chat-broker`` subprocess; the other side of the conversation
is the blocking :class:`client.Client`.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pexpect
import pytest

from client import Client
from client import events as ev
from tests.conftest import SCALE, BrokerProcess, script, spawn_broker, wait_for

pytestmark = pytest.mark.timeout(int(90 * SCALE))

TIMEOUT = 10 * SCALE
# A colour (foreground or background; 8, 16, 256 or true colour) in an SGR sequence.
COLOUR_SGR = re.compile(r"\x1b\[(?:\d+;)*(?:3[0-8]|4[0-8]|9[0-7]|10[0-7])(?:;\d+)*m")


# Between any two visible characters the terminal stream may hold escape
# sequences (a colour, a cursor move): matched text allows them anywhere.
_CSI = r"(?:\x1b\[[0-9;?]*[A-Za-z])*"


def see(child: pexpect.spawn, text: str) -> None:
    """Wait until ``text`` is shown, whatever styles the terminal got in between."""
    # A trailing space may be drawn as a cursor move to the right.
    parts = [r"(?: |\x1b\[\d*C)" if char == " " else re.escape(char) for char in text]
    child.expect(_CSI.join(parts))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    # No terminal answers prompt_toolkit's cursor position request under
    # pexpect; without this it would print a warning after a timeout.
    env.update(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="80", LINES="24")
    env.update(extra)
    return env


@contextmanager
def terminal_client(broker: BrokerProcess, *args: str, **env: str) -> Iterator[pexpect.spawn]:
    """``chat-client`` in a 24x80 pseudo-terminal; killed at the end if still running."""
    child = pexpect.spawn(
        script("chat-client"),
        ["--server", broker.router, "--plain", *args],
        env=_env(**env),
        dimensions=(24, 80),
        timeout=TIMEOUT,
        encoding="utf-8",
        codec_errors="replace",
    )
    try:
        yield child
    finally:
        child.close(force=True)


@contextmanager
def other(broker: BrokerProcess, nick: str, room: str = "lobby") -> Iterator[Client]:
    """A blocking client on the other side, closed at the end."""
    client = Client(broker.router, nick, room)
    try:
        client.connect(timeout=TIMEOUT)
        yield client
    finally:
        client.close()


def _joined(child: pexpect.spawn, nick: str, room: str = "lobby") -> None:
    see(child, f"you are {nick} in #{room}")
    see(child, f"[{nick} #{room}]")


def test_partial_line_survives_an_incoming_message(chat_broker: BrokerProcess) -> None:
    with other(chat_broker, "bob") as bob, terminal_client(chat_broker, "--nick", "alice") as child:
        _joined(child, "alice")
        wait_for(bob, ev.Join, lambda e: e.nick == "alice")
        child.send("half a li")  # no Enter
        see(child, "half a li")
        bob.say("incoming news")
        see(child, "<bob> incoming news")
        # The prompt is redrawn below the new line with the half-typed text.
        see(child, "[alice #lobby]")
        see(child, "half a li")
        child.send("ne, intact\r")
        line = wait_for(bob, ev.Message, lambda m: m.nick == "alice")
        assert line.text == "half a line, intact"
        see(child, "<alice> half a line, intact")


def test_tab_completes_nicknames_and_commands(chat_broker: BrokerProcess) -> None:
    with (
        other(chat_broker, "bobby") as bob,
        terminal_client(chat_broker, "--nick", "alice") as child,
    ):
        _joined(child, "alice")
        child.send("bo\t")
        see(child, "bobby: ")
        child.send("ping\r")
        assert wait_for(bob, ev.Message, lambda m: m.nick == "alice").text == "bobby: ping"
        # Not at the start of a line: no ": ".
        child.send("see bo\t")
        see(child, "see bobby")
        child.send("!\r")
        assert wait_for(bob, ev.Message, lambda m: m.nick == "alice").text == "see bobby!"
        child.send("/wh\t")
        see(child, "/who ")
        child.send("\r")
        see(child, "#lobby (2): alice, bobby")


def test_nickname_prompt_asks_again_with_the_reason(chat_broker: BrokerProcess) -> None:
    with other(chat_broker, "bob") as bob, terminal_client(chat_broker) as child:
        see(child, "What is your name? ")
        child.send("Bob\r")  # taken, case-insensitively
        see(child, "taken")
        see(child, "[nick_taken]")
        see(child, "What is your name? ")
        child.send("no spaces\r")
        see(child, "[nick_invalid]")
        see(child, "What is your name? ")
        child.send("carol\r")
        _joined(child, "carol")
        wait_for(bob, ev.Join, lambda e: e.nick == "carol")


def test_a_taken_nickname_at_end_of_input_is_said_and_exits_2(chat_broker: BrokerProcess) -> None:
    # No other name can be asked for: the refusal is the outcome, not a clean leave.
    with other(chat_broker, "bob"):
        done = subprocess.run(
            [script("chat-client"), "--server", chat_broker.router, "--plain", "--nick", "Bob"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=_env(),
            timeout=TIMEOUT * 2,
            check=False,
        )
    out = done.stdout.decode()
    assert done.returncode == 2, (out, done.stderr.decode())
    assert "[nick_taken]" in out and "taken" in out


def test_no_colour_when_stdout_is_not_a_terminal(chat_broker: BrokerProcess) -> None:
    with other(chat_broker, "bob") as bob:
        done = subprocess.run(
            [script("chat-client"), "--server", chat_broker.router],
            input=b"bob\ndave\nhello from a pipe\n",
            capture_output=True,
            env=_env(),
            timeout=TIMEOUT * 2,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        out = done.stdout.decode()
        assert "\x1b" not in out
        assert "What is your name? " in out and "[nick_taken]" in out
        assert "you are dave in #lobby" in out
        line = wait_for(bob, ev.Message, lambda m: m.nick == "dave")
        assert line.text == "hello from a pipe"
        wait_for(bob, ev.Leave, lambda e: e.nick == "dave" and e.reason == "exit")


@pytest.mark.parametrize("no_color", [False, True])
def test_colour_on_a_terminal_unless_NO_COLOR(chat_broker: BrokerProcess, no_color: bool) -> None:
    env = {"NO_COLOR": "1"} if no_color else {}
    seen = io.StringIO()
    with (
        other(chat_broker, "bob") as bob,
        terminal_client(chat_broker, "--nick", "alice", **env) as child,
    ):
        child.logfile_read = seen
        _joined(child, "alice")
        bob.say("some colourful words, alice")
        see(child, "colourful words")
        child.send("/exit\r")
        child.expect(pexpect.EOF)
    # With colour the same session does contain colours: the check can fail.
    assert (COLOUR_SGR.search(seen.getvalue()) is None) == no_color


def test_escape_sequences_from_others_are_shown_escaped(chat_broker: BrokerProcess) -> None:
    with other(chat_broker, "bob") as bob, terminal_client(chat_broker, "--nick", "alice") as child:
        _joined(child, "alice")
        bob.say("evil \x1b[2J\x1b]0;pwned\x07 \x9b31m done")
        see(child, "<bob> evil \\x1b[2J\\x1b]0;pwned\\x07 \\x9b31m done")


@pytest.mark.parametrize("how", ["ctrl-d", "ctrl-c", "/quit"])
def test_leaving_tells_the_others(chat_broker: BrokerProcess, how: str) -> None:
    with other(chat_broker, "bob") as bob, terminal_client(chat_broker, "--nick", "alice") as child:
        _joined(child, "alice")
        wait_for(bob, ev.Join, lambda e: e.nick == "alice")
        if how == "ctrl-d":
            child.sendcontrol("d")
        elif how == "ctrl-c":
            child.sendcontrol("c")
        else:
            child.send("/quit\r")
        leave = wait_for(bob, ev.Leave, lambda e: e.nick == "alice")
        assert leave.reason == "exit"
        see(child, "you left the chat")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0


@pytest.mark.parametrize("no_bell", [False, True])
def test_mention_rings_the_bell_unless_no_bell(chat_broker: BrokerProcess, no_bell: bool) -> None:
    args = ["--nick", "alice", *(["--no-bell"] if no_bell else [])]
    seen = io.StringIO()
    with other(chat_broker, "bob") as bob, terminal_client(chat_broker, *args) as child:
        child.logfile_read = seen
        _joined(child, "alice")
        bob.say("no mention here")
        see(child, "no mention here")
        assert "\x07" not in seen.getvalue()
        bob.say("Alice: are you there?")
        see(child, "are you there?")
        bob.say("marker")  # the bell, if any, is written before this line is shown
        see(child, "<bob> marker")
        assert ("\x07" in seen.getvalue()) != no_bell


def test_broker_going_away_is_shown(chat_broker: BrokerProcess) -> None:
    with terminal_client(chat_broker, "--nick", "alice") as child:
        _joined(child, "alice")
        chat_broker.stop()
        # One notice, not a second "lost the broker" (found by QA)
        see(child, "the broker is shutting down; will reconnect when it is back")
        see(child, "[alice #lobby (reconnecting)]")
        assert "lost the broker" not in child.before
        child.sendcontrol("d")
        see(child, "you left the chat")
        child.expect(pexpect.EOF)


def test_a_restarted_broker_is_rejoined_and_shown(tmp_path: Path) -> None:
    history = str(tmp_path / "history.sqlite3")
    first = spawn_broker("--client-timeout", "3", "--history", history)
    second: BrokerProcess | None = None
    try:
        with terminal_client(first, "--nick", "alice") as child:
            _joined(child, "alice")
            first.stop(signal.SIGKILL)  # no goodbye: only the heartbeats tell
            see(child, "lost the broker; reconnecting...")
            second = spawn_broker(
                "--client-timeout", "3", "--history", history, router=first.router, pub=first.pub
            )
            see(child, "reconnected")
            see(child, "[alice #lobby]")
            with other(second, "bob") as bob:
                child.sendline("still here")
                assert wait_for(bob, ev.Message, lambda e: e.nick == "alice").text == "still here"
            # prompt_toolkit prints incoming lines with the terminal briefly in
            # cooked mode, where the tty itself swallows a Ctrl-D: let the
            # leave notice be printed before pressing it.
            see(child, "bob left #lobby")
            see(child, "[alice #lobby]")
            child.sendcontrol("d")
            child.expect(pexpect.EOF)
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop()
