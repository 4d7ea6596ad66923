"""The full-screen ``chat-client``: windows, a nick list, a status bar, an input line.

A prompt_toolkit full-screen ``Application`` draws the screen
(:mod:`client.screen` decides what is on it) and reads keys in raw mode for
as long as it runs. Nothing is printed in cooked mode while it runs, so no
key is ever swallowed by a mode switch (docs/CLIENT.md, "Keys"):

* Enter sends the line (to the room or person of the window on screen).
* Ctrl-C clears a typed line; on an empty line it leaves. Ctrl-D on an
  empty line leaves.
* A bracketed paste of several lines sends each line as a line of its own,
  paced by the client's flood control; above :data:`PASTE_ASK_LINES` lines
  it asks first (y/n).
* Alt-1…9 and Alt-0 (window 10), Alt-Left/Alt-Right and Ctrl-P/Ctrl-N
  switch windows; PageUp/PageDown scroll; Up/Down walk the window's own
  input history; Tab completes; F2 (or ``/names``) shows or hides the nick
  list; Ctrl-L redraws.

The bindings themselves are in :mod:`client.fullscreen_keys`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
from collections.abc import Iterator
from typing import Any

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.layout import (
    ConditionalContainer,
    Float,
    FloatContainer,
    HSplit,
    Layout,
    VSplit,
    Window,
)
from prompt_toolkit.layout.controls import BufferControl, FormattedTextControl
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.output import ColorDepth

from client import events as ev
from client.aio import AsyncClient
from client.commands import EXIT, execute
from client.fullscreen_keys import key_bindings
from client.render import escape_terminal, is_mention
from client.screen import NICKLIST_MIN_COLUMNS, NICKLIST_WIDTH, Screen
from client.session import State
from client.tui import ChatCompleter
from protocol import ChatError, ProtocolError, validate_room

__all__ = ["PASTE_ASK_LINES", "TUI_COMMANDS", "FullScreen"]

#: A paste of more lines than this asks before sending (a mistaken paste of a
#: log file should not flood a room).
PASTE_ASK_LINES = 20

#: Commands of the full-screen client only (the others are client/commands.py's).
TUI_COMMANDS = {
    "window": "/window N: show window N (also Alt-1…9, Alt-Left/Right)",
    "query": "/query NICK [TEXT]: open a private conversation window",
    "close": "/close: close a private conversation window (/part leaves a room)",
    "ignore": "/ignore NICK: hide NICK's lines for this session (/ignore alone lists)",
    "unignore": "/unignore NICK: show NICK's lines again",
    "names": "/names: show or hide the nick list (also F2)",
}


class _Sink(io.TextIOBase):
    """Stands in for stdout and stderr while the screen is up: a stray print
    (a warning) becomes a notice instead of breaking the screen."""

    def __init__(self, chat: FullScreen) -> None:
        self._chat = chat
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if line.strip():
                self._chat.screen.notice(escape_terminal(line))
                self._chat.redraw()
        return len(text)


class FullScreen:
    """One full-screen session over a connected :class:`AsyncClient`."""

    def __init__(self, client: AsyncClient, colour: bool = True, bell: bool = True) -> None:
        self.client = client
        self.bell = bell
        self.screen = Screen(me=client.nick)
        self.screen.open(client.room or "lobby", focus=True)
        self.paste_pending: list[str] = []
        self._status = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._input = asyncio.Lock()
        self.buffer = Buffer(
            completer=ChatCompleter(self._members, self._everyone, lambda: self.client.nick),
            complete_while_typing=False,
            multiline=False,
        )
        self.app: Application[int] = Application(
            layout=self._layout(),
            key_bindings=key_bindings(self),
            full_screen=True,
            mouse_support=False,
            color_depth=None if colour else ColorDepth.DEPTH_1_BIT,
        )

    # --- layout ----------------------------------------------------------------

    def size(self) -> tuple[int, int]:
        """The terminal's columns and rows, now."""
        size = self.app.output.get_size()
        return size.columns, size.rows

    def _nicklist_shown(self) -> bool:
        columns, _ = self.size()
        window = self.screen.window
        return (
            self.screen.nicklist
            and not window.private
            and columns >= NICKLIST_MIN_COLUMNS
            and window.name in self.client.session.members
        )

    def _text(self) -> StyleAndTextTuples:
        columns, rows = self.size()
        width = columns - (NICKLIST_WIDTH + 1 if self._nicklist_shown() else 0)
        lines = self.screen.rows(max(10, width), max(1, rows - 3))
        return _join(lines)

    def _nicks(self) -> StyleAndTextTuples:
        _, rows = self.size()
        name = self.screen.window.name
        members = self.client.session.members.get(name, [])
        return _join(
            self.screen.nick_rows(members, self.client.session.presence.away, max(1, rows - 3))
        )

    def _title(self) -> StyleAndTextTuples:
        columns, _ = self.size()
        text = self.screen.title(self.client.session.presence.topics)
        return [("", " " + text[: max(0, columns - 2)])]

    def _status_bar(self) -> StyleAndTextTuples:
        return list(self.screen.status(self._state()))

    def _prompt(self) -> StyleAndTextTuples:
        if self.paste_pending:
            return [("fg:ansiyellow bold", f"send {len(self.paste_pending)} pasted lines? [y/n] ")]
        return [("bold", f"[{self.screen.window.label}] ")]

    def _layout(self) -> Layout:
        body = VSplit(
            [
                Window(FormattedTextControl(self._text), wrap_lines=False),
                ConditionalContainer(
                    VSplit(
                        [
                            Window(width=1, char="│", style="fg:ansibrightblack"),
                            Window(FormattedTextControl(self._nicks), width=NICKLIST_WIDTH),
                        ]
                    ),
                    filter=Condition(self._nicklist_shown),
                ),
            ]
        )
        input_row = VSplit(
            [
                Window(FormattedTextControl(self._prompt), dont_extend_width=True),
                Window(BufferControl(self.buffer)),
            ],
            height=1,
        )
        root = HSplit(
            [
                Window(FormattedTextControl(self._title), height=1, style="reverse"),
                body,
                Window(FormattedTextControl(self._status_bar), height=1, style="reverse"),
                input_row,
            ]
        )
        return Layout(
            FloatContainer(
                root,
                floats=[Float(xcursor=True, ycursor=True, content=CompletionsMenu(max_height=6))],
            ),
            focused_element=self.buffer,
        )

    # --- keys --------------------------------------------------------------------

    # --- actions ---------------------------------------------------------------

    def switch(self, index: int, wrap: bool = False) -> bool:
        """Show window ``index`` (from 0), keeping each window's half-typed line."""
        if wrap and self.screen.windows:
            index %= len(self.screen.windows)
        old = self.screen.window
        if not 0 <= index < len(self.screen.windows):
            return False
        old.draft = self.buffer.text
        self.screen.switch(index)
        window = self.screen.window
        self.buffer.reset()
        self.buffer.text, self.buffer.cursor_position = window.draft, len(window.draft)
        window.draft = ""
        if not window.private:
            self.client.session.current = window.name
        self.redraw()
        return True

    def pasted(self, data: str) -> None:
        """A bracketed paste: one line goes into the input line, several are
        sent as lines of their own (asking first above PASTE_ASK_LINES)."""
        lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if len(lines) == 1:
            self.buffer.insert_text(lines[0])
            return
        if self.buffer.text:
            lines[0] = self.buffer.text + lines[0]
            self.buffer.reset()
        lines = [line for line in lines if line.strip()]
        if len(lines) > PASTE_ASK_LINES:
            self.paste_pending = lines
            self.redraw()
            return
        self.spawn(self.send_lines(lines))

    async def send_lines(self, lines: list[str]) -> None:
        """Send pasted lines in order, each as text (a pasted ``/quit`` is a line)."""
        async with self._input:
            for line in lines:
                await self._send_text(line)

    async def _send_text(self, text: str) -> None:
        window = self.screen.window
        try:
            if window.private:
                await self.client.private(window.name, text)
            else:
                await self.client.say(text, window.name)
        except ProtocolError as exc:
            self.screen.add_event(
                ev.Error(code=exc.code, message=exc.message, text=text), self._rooms()
            )
        except ChatError as exc:
            self.screen.notice(f"not sent: {escape_terminal(str(exc))}")
        self.redraw()

    async def handle_line(self, line: str) -> None:
        """A line typed in the input line: a command or text for this window."""
        async with self._input:  # after any paste still being sent: in the order given
            await self._handle_line(line)

    async def _handle_line(self, line: str) -> None:
        if line.startswith("/") and not line.startswith("//"):
            name, _, rest = line[1:].partition(" ")
            if await self._tui_command(name.lower(), rest.strip()):
                self.redraw()
                return
        elif self.screen.window.private:
            await self._send_text(line[1:] if line.startswith("//") else line)
            return
        window = self.screen.window
        if not window.private:
            self.client.session.current = window.name
        try:
            result = await execute(self.client, line)
        except ChatError as exc:
            self.screen.notice(f"not sent: {escape_terminal(str(exc))}")
            result = []
        if isinstance(result, str):
            assert result == EXIT
            self.app.exit(result=0)
            return
        for event in result:
            self.screen.add_event(event, self._rooms())
        self.redraw()

    async def _tui_command(self, name: str, rest: str) -> bool:
        """Carry out a command of the full-screen client; False if it is not one."""
        screen = self.screen
        if name == "window":
            if not rest.isdigit() or not self.switch(int(rest) - 1):
                screen.notice(f"no window {escape_terminal(rest)}; there are {len(screen.windows)}")
            return True
        if name == "query":
            nick, _, text = rest.partition(" ")
            if not nick:
                screen.notice("usage: /query NICK [TEXT]")
                return True
            window = screen.open(nick, private=True)
            self.switch(screen.windows.index(window))
            if text.strip():
                await self._send_text(text)
            return True
        if name == "close":
            window = screen.window
            if window.private and len(screen.windows) > 1:
                screen.close(window)
            else:
                screen.notice("only a private window closes; /part leaves a room")
            return True
        if name in ("ignore", "unignore"):
            nick = rest.split(" ")[0] if rest else ""
            if not nick:
                listed = ", ".join(sorted(screen.ignored)) or "nobody"
                screen.notice(f"ignoring: {escape_terminal(listed)}")
            elif name == "ignore":
                screen.ignored.add(nick.casefold())
                screen.notice(f"ignoring {escape_terminal(nick)} (for this session)")
            else:
                screen.ignored.discard(nick.casefold())
                screen.notice(f"no longer ignoring {escape_terminal(nick)}")
            return True
        if name == "names":
            screen.nicklist = not screen.nicklist
            return True
        if name == "join" and rest:
            # Already in that room: show its window (no joined reply will come).
            with contextlib.suppress(ProtocolError):
                joined = screen.find(validate_room(rest))
                if joined is not None:
                    return self.switch(screen.windows.index(joined)) or True
            return False
        if name == "part" and not rest and screen.window.private:
            return await self._tui_command("close", "")
        if name == "help":
            for text in TUI_COMMANDS.values():
                screen.notice(text)
            return False  # and the common commands after them
        return False

    def _rooms(self) -> dict[str, list[str]]:
        return self.client.session.members

    def _members(self) -> list[str]:
        return list(self.client.session.members.get(self.screen.window.name, []))

    def _everyone(self) -> list[str]:
        return [n for names in self.client.session.members.values() for n in names]

    def _state(self) -> str:
        state = self.client.session.state
        return {
            State.JOINED: "connected",
            State.RECONNECTING: "reconnecting",
            State.JOINING: "joining",
        }.get(state, state.value)

    def spawn(self, work: Any) -> None:
        """Run a coroutine (a line to send) in the background, cancelled at the end."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def redraw(self) -> None:
        """Ask for the screen to be drawn again (cheap: coalesced by prompt_toolkit)."""
        self.app.invalidate()

    def show(self, event: ev.Event) -> None:
        """Put an event on the screen, ringing the bell for a mention or private line."""
        self.screen.me = self.client.nick or self.screen.me
        self.screen.add_event(event, self._rooms())
        if self.bell and _mentions(event, self.screen.me, self.screen.ignored):
            self.app.output.bell()
        self.redraw()

    async def _pump(self) -> None:
        async for event in self.client:
            self.show(event)
        reason = self.client.session.close_reason or "exit"
        if reason != "exit":
            self._status = 1
            self.app.exit(result=1)

    async def run(self) -> int:
        """Run the screen until the user leaves or the broker drops us; the exit status."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, lambda: self.app.exit(result=0))
        pump = asyncio.create_task(self._pump())
        try:
            with self._quiet():
                status = await self.app.run_async()
        finally:
            for signum in (signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, ChatError):
                await pump
            for task in list(self._tasks):
                task.cancel()
        return status if status is not None else self._status

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        sink = _Sink(self)
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield


def _mentions(event: ev.Event, me: str, ignored: set[str]) -> bool:
    """Whether ``event`` is for us: a private line, or a live line naming us."""
    if not isinstance(event, (ev.Private, ev.Message)):
        return False
    nick = event.nick.casefold()
    if nick == me.casefold() or nick in ignored:
        return False
    if isinstance(event, ev.Private):
        return True
    return not event.history and is_mention(event.text, me)


def _join(rows: list[list[tuple[str, str]]]) -> StyleAndTextTuples:
    out: StyleAndTextTuples = []
    for index, row in enumerate(rows):
        if index:
            out.append(("", "\n"))
        out.extend(row)
    return out
