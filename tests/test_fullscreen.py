"""The full-screen ``chat-client`` the way a user meets it: in a pseudo-terminal.

The client runs as the installed console script against a real
``chat-broker``; pyte turns what it writes into a screen, and the tests
assert on that screen (rows of characters), as a person would read it. The
other side of the conversation is the blocking :class:`client.Client`.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from client import Client
from client import events as ev
from tests.conftest import SCALE, BrokerProcess, script, spawn_broker, wait_for
from tests.terminal import Terminal

pytestmark = pytest.mark.timeout(int(90 * SCALE))

TIMEOUT = 10 * SCALE
# A colour (foreground or background; 8, 16, 256 or true colour) in an SGR sequence.
COLOUR_SGR = re.compile(r"\x1b\[(?:\d+;)*(?:3[0-8]|4[0-8]|9[0-7]|10[0-7])(?:;\d+)*m")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
    env.update(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    env.update(extra)
    return env


@contextmanager
def fullscreen(
    broker: BrokerProcess, *args: str, rows: int = 24, columns: int = 80, nick: str = "alice"
) -> Iterator[Terminal]:
    """``chat-client --nick alice`` on a screen of ``rows`` x ``columns``, joined."""
    term = Terminal(
        [script("chat-client"), "--server", broker.router, "--nick", nick, *args],
        _env(),
        rows=rows,
        columns=columns,
    )
    try:
        term.wait("[connected]")
        yield term
    finally:
        term.close()


@contextmanager
def other(broker: BrokerProcess, nick: str, room: str = "lobby") -> Iterator[Client]:
    client = Client(broker.router, nick, room)
    try:
        client.connect(timeout=TIMEOUT)
        yield client
    finally:
        client.close()


def _status(term: Terminal) -> str:
    return term.row_with("[connected]") if "[connected]" in term.text() else term.lines()[-2]


def test_layout_at_80x24_title_text_nicklist_status_input(chat_broker: BrokerProcess) -> None:
    with other(chat_broker, "bob") as bob:
        bob.topic("plans for the week")
        wait_for(bob, ev.Topic)
        bob.say("said before alice came")
        wait_for(bob, ev.Message)
        with fullscreen(chat_broker) as term:
            term.wait("<bob>" if False else "here: bob")
            bob.say("a long line " + "word " * 30 + "END")
            rows = term.wait("END")
            assert len(rows) == 24
            assert rows[0].strip() == "#lobby: plans for the week", rows[0]
            assert rows[22].startswith("[") and "[alice]" in rows[22] and "[1:#lobby]" in rows[22]
            assert rows[23].startswith("[#lobby]"), rows[23]
            # The nick list: a column at the right, a count and both names.
            assert rows[1].endswith("│2 here"), rows[1]
            assert rows[2].endswith("│ alice") and rows[3].endswith("│ bob")
            # The wrapped line: continuation rows start under the text, not at column 0.
            first = next(i for i, row in enumerate(rows) if "<bob> a long line" in row)
            indent = rows[first].index("a long line")
            for row in rows[first + 1 : rows.index(next(r for r in rows if "END" in r)) + 1]:
                assert row[:indent].strip() == "", row
                assert row[indent] != " ", row
            # The stored line replayed on joining comes first, then the live separator.
            replayed = next(i for i, row in enumerate(rows) if "said before alice came" in row)
            assert "-- live --" in rows[replayed + 1]
            assert "you are in #lobby" in rows[replayed + 2]
            # Nothing runs under the nick list.
            divider = rows[1].index("│")
            assert all(len(row) <= 80 for row in rows)
            assert all(row[divider] == "│" for row in rows[1:22] if len(row) > divider)


def test_layout_at_a_wide_size_and_a_resize(chat_broker: BrokerProcess) -> None:
    with other(chat_broker, "bob") as bob, fullscreen(chat_broker, rows=50, columns=160) as term:
        bob.say("wide " * 25 + "TAIL")
        rows = term.wait("TAIL")
        assert len(rows) == 50 and rows[48].startswith("[") and "[alice]" in rows[48]
        assert "TAIL" in next(r for r in rows if "<bob> wide" in r), "fits on one row at 160"
        assert rows[1].endswith("│2 here")
        term.resize(24, 80)
        term.wait(
            lambda r: "[alice]" in r[22] and r[23].startswith("[#lobby]"), why="redraw at 80x24"
        )
        before = term.settled()
        term.forget()
        term.send("\x0c")  # Ctrl-L: the whole screen drawn again
        # (All but the status bar, whose clock may have moved on.)
        term.wait(lambda r: r[:22] + r[23:] == before[:22] + before[23:], why="Ctrl-L redrew")
        term.resize(20, 50)
        # Too narrow for the nick list: the text takes the whole width.
        term.wait(
            lambda r: "[alice]" in r[18] and not any("│" in row for row in r), why="no nick list"
        )
        term.resize(40, 120)
        term.wait(lambda r: "[alice]" in r[38] and r[1].endswith("│2 here"), why="nick list back")


def test_switching_windows_activity_markers_and_a_mention(chat_broker: BrokerProcess) -> None:
    with other(chat_broker, "bob") as bob, fullscreen(chat_broker) as term:
        bob.join("dev")
        wait_for(bob, ev.Joined)
        term.send("/join dev\r")
        term.wait(lambda r: "[2:#dev]" in r[22], why="window 2 shown")
        assert term.lines()[0].strip() == "#dev"
        term.send("\x1b1")  # Alt-1
        term.wait(lambda r: "[1:#lobby]" in r[22], why="back to window 1")
        bob.say("plain news", room="dev")
        term.wait(lambda r: "[act: 2]" in r[22], why="an unread marker for window 2")
        assert b"\x07" not in term.raw
        bob.say("alice: a question for you", room="lobby")  # on screen: no marker
        term.wait("a question for you")
        assert b"\x07" in term.raw, "a mention rings the bell"
        bob.say("alice, look here", room="dev")
        term.wait(lambda r: "[act: 2!]" in r[22], why="a mention marker for window 2")
        bob.private("alice", "psst")
        term.wait(lambda r: "[act: 2!,3!]" in r[22], why="a private window with a mention")
        term.send("\x1b[1;3C")  # Alt-Right
        term.wait(lambda r: "[2:#dev]" in r[22] and "[act: 3!]" in r[22], why="window 2 read")
        assert "look here" in term.text()
        term.send("/window 3\r")
        term.wait(lambda r: "[3:bob]" in r[22] and "[act" not in r[22], why="window 3")
        assert "<bob> psst" in term.text()
        term.send("back to you\r")  # a private window sends private lines
        line = wait_for(bob, ev.Private, lambda e: e.nick == "alice")
        assert line.text == "back to you"
        term.send("\x1b[1;3D\x1b[1;3D")  # Alt-Left twice
        term.wait(lambda r: "[1:#lobby]" in r[22], why="window 1 again")
        term.send("/query carol\r")
        term.wait(lambda r: "[4:carol]" in r[22], why="a query window")
        term.send("/part\r")  # in a private window: closes it
        term.wait(lambda r: "[3:bob]" in r[22], why="the query window closed")
        term.send("/join dev\r")  # already in: shows its window
        term.wait(lambda r: "[2:#dev]" in r[22], why="/join of a room we are in")


def test_ctrl_d_and_typing_while_lines_arrive_are_never_swallowed(
    chat_broker: BrokerProcess,
) -> None:
    with other(chat_broker, "bob") as bob, fullscreen(chat_broker) as term:
        stop = threading.Event()

        def flood() -> None:
            count = 0
            while not stop.is_set():
                count += 1
                bob.say(f"line {count}")
                stop.wait(0.2)  # the broker's flood limit: 5 lines a second

        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        try:
            term.wait("<bob> line 3")
            text = "abcdefghijklmnopqrst"
            for typed in range(1, len(text) + 1):
                term.send(text[typed - 1])
                term.wait(lambda r, t=text[:typed]: r[23].endswith(t), why=text[:typed])
            term.send("\x01")  # Ctrl-A: to the start; each Ctrl-D now deletes one character
            for count in range(len(text), 0, -1):
                term.send("\x04")
                term.wait(
                    lambda r, n=count: (
                        r[23] == "[#lobby] " + text[len(text) - n + 1 :]
                        or r[23] == "[#lobby]" + (" " + text[len(text) - n + 1 :]).rstrip()
                    ),
                    why=f"{count - 1} characters left",
                )
            term.send("\x04")  # on the empty line: leave
            assert term.wait_exit() == 0
        finally:
            stop.set()
            sender.join()
        wait_for(bob, ev.Leave, lambda e: e.nick == "alice")


def test_ctrl_c_clears_a_typed_line_and_leaves_on_an_empty_one(chat_broker: BrokerProcess) -> None:
    with other(chat_broker, "bob") as bob, fullscreen(chat_broker) as term:
        term.send("half typed")
        term.wait(lambda r: r[23].endswith("half typed"), why="typed")
        term.send("\x03")
        term.wait(lambda r: r[23].rstrip() == "[#lobby]", why="a cleared line")
        term.send("after\r")
        assert wait_for(bob, ev.Message, lambda e: e.nick == "alice").text == "after"
        term.send("bo\t")  # Tab completes a nickname
        term.wait(lambda r: r[23].rstrip().endswith("bob:"), why="completed")
        term.send("\x03")
        term.send("\x03")
        assert term.wait_exit() == 0
        wait_for(bob, ev.Leave, lambda e: e.nick == "alice")


def test_a_bracketed_paste_of_15_lines_sends_15_lines_in_order(chat_broker: BrokerProcess) -> None:
    with other(chat_broker, "bob") as bob, fullscreen(chat_broker) as term:
        lines = [f"pasted {n}" for n in range(1, 16)]
        term.paste("\n".join(lines) + "\n")
        got = [wait_for(bob, ev.Message, lambda e: e.nick == "alice").text for _ in lines]
        assert got == lines
        term.wait("<alice> pasted 15")
        # A bigger paste asks first; anything but y drops it.
        term.paste("\n".join(f"big {n}" for n in range(30)))
        term.wait("send 30 pasted lines? [y/n]")
        term.send("n")
        term.wait("paste of 30 lines dropped")
        term.paste("\r\n".join(f"yes {n}" for n in range(25)))
        term.wait("send 25 pasted lines? [y/n]")
        term.send("y")
        got = [wait_for(bob, ev.Message, lambda e: e.nick == "alice").text for _ in range(25)]
        assert got == [f"yes {n}" for n in range(25)], "the dropped paste never went out"


def test_scrollback_and_input_history(chat_broker: BrokerProcess) -> None:
    with other(chat_broker, "bob") as bob, fullscreen(chat_broker) as term:
        for n in range(40):
            bob.say(f"old line {n}")  # paced by the broker's flood limit: 6 s
        term.wait("old line 39", timeout=20)
        term.send("\x1b[5~")  # PageUp
        term.wait(lambda r: "[more]" in r[22] and "old line 39" not in "\n".join(r), why="paged up")
        term.send("\x1b[5~\x1b[5~\x1b[5~")
        term.wait("old line 0")
        term.send("\x1b[6~" * 5)  # PageDown, past the bottom
        term.wait(lambda r: "[more]" not in r[22] and "old line 39" in "\n".join(r), why="bottom")
        term.send("first\r")
        term.send("second\r")
        term.wait("<alice> second")
        term.send("\x1b[A\x1b[A")  # Up, Up
        term.wait(lambda r: r[23].endswith("first"), why="history")
        term.send("\x1b[B")
        term.wait(lambda r: r[23].endswith("second"), why="history forward")


def test_hostile_topic_and_away_message_are_shown_escaped(chat_broker: BrokerProcess) -> None:
    hostile = "\x1b[2J\x1b]0;pwned\x07evil"
    with other(chat_broker, "bob") as bob, fullscreen(chat_broker) as term:
        bob.topic(hostile)
        rows = term.wait(lambda r: "evil" in r[0], why="the topic in the title")
        assert rows[0].strip() == r"#lobby: \x1b[2J\x1b]0;pwned\x07evil"
        bob.away("\x1b[31mgone\x07")
        term.wait(lambda r: any(row.endswith("│-bob") for row in r), why="bob marked away")
        term.send("/msg bob are you there\r")
        term.wait(r"bob is away: \x1b[31mgone\x07")
        term.send("/who\r")
        term.wait(r"bob (away: \x1b[31mgone\x07)")
        # Nothing from bob reached the terminal as a control sequence.
        assert b"pwned\x07" not in term.raw and b"\x1b[31mgone" not in term.raw
        assert "Day changed" not in term.text()
        bob.away("")
        term.wait(lambda r: any(row.endswith("│ bob") for row in r), why="bob back")


def test_topic_and_away_commands_reach_others(chat_broker: BrokerProcess) -> None:
    with other(chat_broker, "bob") as bob, fullscreen(chat_broker) as term:
        term.send("/topic release on friday\r")
        topic = wait_for(bob, ev.Topic)
        assert (topic.text, topic.nick, topic.changed) == ("release on friday", "alice", True)
        term.wait(lambda r: r[0].strip() == "#lobby: release on friday", why="title")
        term.send("/away at lunch\r")
        assert wait_for(bob, ev.Away).text == "at lunch"
        term.wait("you are away: at lunch")
        bob.private("alice", "hello?")
        assert wait_for(bob, ev.Away, lambda e: e.auto).text == "at lunch"
        term.send("/back\r")
        assert wait_for(bob, ev.Away).text == ""
        term.send("/ignore bob\r")
        term.wait("ignoring bob")
        bob.say("you will not see this")
        bob.say("alice: nor this")
        wait_for(bob, ev.Message, lambda e: e.text == "alice: nor this")
        with other(chat_broker, "carol") as carol:
            carol.say("after them")  # the room's order: shown means bob's lines came
            term.wait("<carol> after them")
        term.send("/unignore bob\r")
        term.wait("no longer ignoring bob")
        bob.say("but this")
        term.wait("<bob> but this")
        assert "not see this" not in term.text() and "nor this" not in term.text()


def test_a_broker_restart_while_the_screen_is_up(tmp_path: Path) -> None:
    history = str(tmp_path / "history.sqlite3")
    first = spawn_broker("--client-timeout", "3", "--history", history)
    second: BrokerProcess | None = None
    try:
        with other(first, "bob") as bob:
            bob.topic("survives restarts")
            wait_for(bob, ev.Topic)
        with fullscreen(first) as term:
            term.wait(lambda r: "survives restarts" in r[0], why="topic")
            first.stop(signal.SIGKILL)
            term.wait(lambda r: "[reconnecting]" in r[22], why="reconnecting in the status bar")
            second = spawn_broker(
                "--client-timeout", "3", "--history", history, router=first.router, pub=first.pub
            )
            term.wait(lambda r: "[connected]" in r[22], why="connected again")
            with other(second, "carol") as carol:
                term.send("still here\r")
                assert wait_for(carol, ev.Message, lambda e: e.nick == "alice").text == "still here"
                carol.topic()
                assert wait_for(carol, ev.Topic).text == "survives restarts"
            term.wait("carol left")
            term.send("\x04")
            assert term.wait_exit() == 0
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop()


@pytest.mark.parametrize("how", ["--plain", "TERM=dumb"])
def test_line_mode_for_plain_and_dumb_terminals(chat_broker: BrokerProcess, how: str) -> None:
    args = [script("chat-client"), "--server", chat_broker.router, "--nick", "alice"]
    env = _env()
    if how == "--plain":
        args.append("--plain")
    else:
        env["TERM"] = "dumb"
    term = Terminal(args, env)
    try:
        term.wait("you are alice in #lobby")
        assert "[connected]" not in term.text(), "no status bar in line mode"
        term.send("/quit\r")
        assert term.wait_exit() == 0
    finally:
        term.close()


def test_no_color_means_no_colours_on_the_full_screen(chat_broker: BrokerProcess) -> None:
    args = [script("chat-client"), "--server", chat_broker.router, "--nick", "alice"]
    term = Terminal(args, _env(NO_COLOR="1"))
    try:
        with other(chat_broker, "bob") as bob:
            term.wait("[connected]")
            bob.say("alice: in colour?")
            term.wait("in colour?")
        assert COLOUR_SGR.search(term.raw.decode("utf-8", "replace")) is None
        term.send("\x04")
        assert term.wait_exit() == 0
    finally:
        term.close()


def test_history_fetched_later_goes_above_in_time_order(chat_broker: BrokerProcess) -> None:
    with other(chat_broker, "bob") as bob:
        for n in range(3):
            bob.say(f"older {n}")
        wait_for(bob, ev.Message, lambda e: e.text == "older 2")
        with fullscreen(chat_broker, "--backlog", "0") as term:
            bob.say("live one")
            term.wait("<bob> live one")
            term.send("/history 3\r")
            rows = term.wait("older lines of #lobby above")
            order = [
                i
                for text in ("older 0", "older 1", "older 2", "you are in #lobby", "live one")
                for i, row in enumerate(rows)
                if text in row
            ]
            assert order == sorted(order) and len(order) == 5, rows
