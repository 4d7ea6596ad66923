"""The interactive ``chat-client``: an input line that incoming lines never clobber.

On a terminal (stdin and stdout both TTYs) the input line is a prompt_toolkit
``PromptSession``: ``prompt_async`` runs inside ``patch_stdout`` and every
incoming line is printed with ``print_formatted_text``, which erases the
prompt, prints the line and redraws the prompt with whatever was half typed.
Up/Down walk through what was typed, Tab completes nicknames and /commands.

Anywhere else (piped input, output to a file) it falls back to plain line
reading and plain text, so scripts and tests can drive it without a terminal.

What each event looks like is decided in :mod:`client.render`; this module
only does the I/O.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.output import ColorDepth
from prompt_toolkit.patch_stdout import patch_stdout

from client import events as ev
from client.aio import AsyncClient
from client.commands import COMMANDS, EXIT, execute
from client.render import Rendered, Renderer, escape_terminal
from client.session import State
from protocol import BrokerUnreachable, ChatError, ErrorCode, JoinRefused

__all__ = ["ChatCompleter", "colour_wanted", "run_interactive"]

#: Exit statuses, as in client/cli.py.
_EXIT_OK = 0
_EXIT_UNREACHABLE = 1
_EXIT_REFUSED = 2

#: Refusals the user can fix by typing another nickname.
_RETRY_NICK = frozenset({ErrorCode.NICK_TAKEN, ErrorCode.NICK_INVALID})

NAME_PROMPT = "What is your name? "

#: Signals that make us leave cleanly (others see a leave notice).
_LEAVE_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Leaving: how long to wait for the unacknowledged lines while none is
#: acknowledged (they are waited for as long as they are, at any length).
LEAVE_STALL = 5.0


def _disconnected_status(reason: str) -> int:
    """The exit status of a session the broker ended: a key refused while
    reconnecting is a refusal, as at the first join (docs/CLIENT.md)."""
    return _EXIT_REFUSED if reason == "auth_failed" else _EXIT_UNREACHABLE


def colour_wanted(stream: object = None, environ: dict[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (no-color.org)."""
    stream = sys.stdout if stream is None else stream
    env = os.environ if environ is None else environ
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not env.get("NO_COLOR")


class ChatCompleter(Completer):
    """Tab completion: /commands at the start of a line, nicknames elsewhere.

    A nickname completed at the very start of a line gets ``": "`` after it
    (addressing someone); after ``/msg`` it gets a space. ``members`` gives
    the nicknames of the current room, ``everyone`` those of all our rooms,
    ``me`` our own nickname (never offered).
    """

    def __init__(
        self,
        members: Callable[[], Iterable[str]],
        everyone: Callable[[], Iterable[str]],
        me: Callable[[], str],
    ) -> None:
        self._members = members
        self._everyone = everyone
        self._me = me

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        """The completions for the text before the cursor."""
        before = document.text_before_cursor
        if before.startswith("/") and " " not in before:
            typed = before[1:].lower()
            for name, spec in COMMANDS.items():
                if name.startswith(typed):
                    yield Completion(
                        f"/{name} ",
                        start_position=-len(before),
                        display=f"/{name}",
                        display_meta=spec.description,
                    )
            return
        word = re.search(r"\S*$", before)
        typed = word.group() if word else ""
        private = re.fullmatch(r"/msg \S*", before, re.IGNORECASE) is not None
        if private:
            candidates, suffix = self._everyone(), " "
        elif before.startswith("/"):
            candidates, suffix = self._members(), ""
        else:
            candidates, suffix = self._members(), (": " if typed == before else "")
        if not typed and not private:
            return  # Tab on an empty word: nothing sensible to offer
        me = self._me().casefold()
        seen: set[str] = set()
        for nick in sorted(candidates, key=str.casefold):
            folded = nick.casefold()
            if folded == me or folded in seen or not folded.startswith(typed.casefold()):
                continue
            seen.add(folded)
            yield Completion(
                nick + suffix, start_position=-len(typed), display=escape_terminal(nick)
            )


class _Screen(Protocol):
    """Where lines go and where typed lines come from."""

    colour: bool

    def show(self, rendered: Rendered) -> None: ...
    def bell(self) -> None: ...
    def refresh(self) -> None: ...
    async def ask(self, prompt: str) -> str | None: ...
    async def read_line(self) -> str | None: ...
    def interrupt(self) -> None: ...
    def width(self) -> int: ...


class _TerminalScreen:
    """prompt_toolkit on a real terminal."""

    def __init__(self, colour: bool, prompt: Callable[[], str], completer: Completer) -> None:
        self.colour = colour
        # Without colour prompt_toolkit's own menus and prompt go monochrome too.
        depth = None if colour else ColorDepth.DEPTH_1_BIT
        self._prompt = prompt
        self._depth = depth or ColorDepth.default()
        self.session: PromptSession[str] = PromptSession(
            history=InMemoryHistory(),
            completer=completer,
            complete_while_typing=False,
            # The broker echoes every line back, stamped; keeping the typed
            # copy on screen too would show each line twice.
            erase_when_done=True,
            color_depth=depth,
        )
        self._names: PromptSession[str] = PromptSession(color_depth=depth)
        # Made now, before patch_stdout replaces sys.stdout, so it writes to
        # the real terminal.
        self._output = self.session.app.output

    def _message(self) -> FormattedText:
        return FormattedText([("bold" if self.colour else "", self._prompt())])

    def show(self, rendered: Rendered) -> None:
        if rendered.fragments:
            print_formatted_text(
                FormattedText(rendered.fragments), output=self._output, color_depth=self._depth
            )

    def bell(self) -> None:
        self._output.bell()

    def refresh(self) -> None:
        if self.session.app.is_running:
            self.session.app.invalidate()

    async def ask(self, prompt: str) -> str | None:
        try:
            return await self._names.prompt_async(prompt)
        except (EOFError, KeyboardInterrupt):
            return None

    async def read_line(self) -> str | None:
        try:
            return await self.session.prompt_async(self._message)
        except (EOFError, KeyboardInterrupt):
            return None

    def interrupt(self) -> None:
        for session in (self.session, self._names):
            if session.app.is_running:
                session.app.exit(exception=EOFError())

    def width(self) -> int:
        return self._output.get_size().columns


class _PlainScreen:
    """Plain lines on stdin and stdout: for pipes, files and scripts."""

    def __init__(self, colour: bool) -> None:
        self.colour = colour
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._reader: threading.Thread | None = None

    def show(self, rendered: Rendered) -> None:
        if not rendered.fragments:
            return
        if self.colour:
            print_formatted_text(FormattedText(rendered.fragments))
            sys.stdout.flush()
        else:
            print(rendered.text, flush=True)

    def bell(self) -> None:
        if sys.stdout.isatty():
            sys.stdout.write("\a")
            sys.stdout.flush()

    def refresh(self) -> None:
        pass

    def _start(self) -> None:
        if self._reader is not None:
            return
        loop = asyncio.get_running_loop()

        def pump() -> None:
            # os.read, not sys.stdin: a daemon thread blocked inside the
            # buffered reader can abort the interpreter at exit.
            pending = b""
            fd = sys.stdin.fileno()
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    text = raw.decode("utf-8", "replace")
                    loop.call_soon_threadsafe(self._lines.put_nowait, text)
            if pending:
                text = pending.decode("utf-8", "replace")
                loop.call_soon_threadsafe(self._lines.put_nowait, text)
            loop.call_soon_threadsafe(self._lines.put_nowait, None)

        self._reader = threading.Thread(target=pump, name="stdin", daemon=True)
        self._reader.start()

    async def ask(self, prompt: str) -> str | None:
        print(prompt, end="", flush=True)
        return await self.read_line()

    async def read_line(self) -> str | None:
        self._start()
        line = await self._lines.get()
        if line is None:
            self._lines.put_nowait(None)  # end of input stays the end
        return line

    def interrupt(self) -> None:
        self._lines.put_nowait(None)

    def width(self) -> int:
        return shutil.get_terminal_size().columns


class _Chat:
    """One interactive session: ask a name, join, then talk until told to stop."""

    def __init__(self, args: argparse.Namespace, terminal: bool, colour: bool) -> None:
        self.args = args
        self.bell = not getattr(args, "no_bell", False)
        self.client = self._new_client()
        self.renderer = Renderer(nick=args.nick or "", room=args.room, colour=colour)
        self.screen: _Screen
        if terminal:
            completer = ChatCompleter(
                self._room_members, self._all_members, lambda: self.client.nick
            )
            self.screen = _TerminalScreen(colour, self._prompt, completer)
        else:
            self.screen = _PlainScreen(colour)
        self._stop = asyncio.Event()
        self.welcome: ev.Welcome | None = None

    def _new_client(self) -> AsyncClient:
        args = self.args
        return AsyncClient(
            args.server,
            args.nick or "",
            args.room,
            pub=args.pub,
            backlog=args.backlog,
            # --server-key/--curve-secret, prepared by client/cli.py
            **getattr(args, "curve_options", {}),
        )

    async def _close_client(self) -> None:
        # A failed close must not hide why we are leaving.
        with contextlib.suppress(ChatError):
            await self.client.close()

    # --- what the completer and prompt ask ----------------------------------

    def _room_members(self) -> list[str]:
        room = self.client.room
        return list(self.client.session.members.get(room, [])) if room else []

    def _all_members(self) -> list[str]:
        return [nick for names in self.client.session.members.values() for nick in names]

    def _prompt(self) -> str:
        self.renderer.nick, self.renderer.room = self.client.nick, self.client.room
        state = self.client.session.state
        label = {State.RECONNECTING: "reconnecting", State.JOINING: "joining"}.get(state)
        return self.renderer.prompt(label)

    # --- output ------------------------------------------------------------

    def show_event(self, event: ev.Event) -> None:
        self.renderer.nick = self.client.nick or self.renderer.nick
        self.renderer.room = self.client.room
        self.renderer.width = self.screen.width()
        rendered = self.renderer.render(event)
        self.screen.show(rendered)
        if rendered.bell and self.bell:
            self.screen.bell()
        self.screen.refresh()  # the prompt shows nickname, room and link state

    def notice(self, text: str, style: str | None = None) -> None:
        self.renderer.width = self.screen.width()
        if style is None:
            self.screen.show(self.renderer.notice(escape_terminal(text)))
        else:
            self.screen.show(self.renderer.notice(escape_terminal(text), style))

    # --- the session -------------------------------------------------------

    async def join(self) -> int | None:
        """Ask for a name until the broker takes one; an exit status if we gave up."""
        nick: str | None = self.args.nick
        refused: JoinRefused | None = None
        self.notice(f"connecting to {', '.join(self.args.server)}")
        while True:
            if not nick:
                nick = await self.screen.ask(NAME_PROMPT)
                if nick is None:
                    if refused is None:
                        return _EXIT_OK  # left before giving any name
                    # No other name will come: the refusal is how this ended.
                    self.notice(f"not joined: {refused.message}")
                    return _EXIT_REFUSED
                nick = nick.strip()
                if not nick:
                    continue
            try:
                welcome = await self.client.connect(nick, timeout=self.args.connect_timeout)
            except JoinRefused as exc:
                if exc.code not in _RETRY_NICK:
                    self.show_event(ev.Error(code=exc.code, message=exc.message, req="hello"))
                    # `unavailable` is passing (a cluster without Redis now)
                    return _EXIT_UNREACHABLE if exc.code == "unavailable" else _EXIT_REFUSED
                self.show_event(
                    ev.Error(
                        code=exc.code,
                        message=f"{exc.message}; please choose another name",
                        req="hello",
                    )
                )
                nick, refused = None, exc
                # A fresh client for the next try: nothing of the refused
                # attempt (sockets, monitors) can leak into it.
                await self._close_client()
                self.client = self._new_client()
                continue
            except BrokerUnreachable as exc:
                self.show_event(ev.Error(code="unreachable", message=str(exc), req="hello"))
                return _EXIT_UNREACHABLE
            self.welcome = welcome
            self.show_event(welcome)
            return None

    async def _print_events(self) -> None:
        async for event in self.client:
            self.show_event(event)

    async def _read_input(self) -> None:
        while True:
            line = await self.screen.read_line()
            if line is None:
                return
            try:
                result = await execute(self.client, line)
            except ChatError as exc:
                self.notice(f"not sent: {exc}")
                continue
            if isinstance(result, str):  # EXIT: /exit or /quit
                assert result == EXIT
                return
            for event in result:
                self.show_event(event)

    async def run(self) -> int:
        """The whole session; returns the exit status."""
        loop = asyncio.get_running_loop()
        for signum in _LEAVE_SIGNALS:
            # prompt_toolkit reads Ctrl-C as a key while it prompts; the
            # handler covers the moments in between, `kill`, and a closed
            # terminal window (SIGHUP).
            loop.add_signal_handler(signum, self._stop.set)
        try:
            with self._stdout_patched():
                joining = asyncio.create_task(self.join())
                stopper = asyncio.create_task(self._stop.wait())
                await asyncio.wait({joining, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not joining.done():
                    self.screen.interrupt()
                status = await joining
                stopper.cancel()
                if status is not None:
                    return status
                return await self._talk()
        finally:
            for signum in _LEAVE_SIGNALS:
                loop.remove_signal_handler(signum)
            await self._close_client()

    async def _talk(self) -> int:
        printer = asyncio.create_task(self._print_events())
        reader = asyncio.create_task(self._read_input())
        stopper = asyncio.create_task(self._stop.wait())
        await asyncio.wait({printer, reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not reader.done():
            self.screen.interrupt()
        await reader
        ended_by_broker = printer.done()
        if not ended_by_broker:
            # A long paste is paced at the broker's rate: wait while lines are
            # being acknowledged, not a fixed time (docs/CLIENT.md).
            with contextlib.suppress(ChatError):
                await self.client.drain(LEAVE_STALL)
        await self._close_client()
        with contextlib.suppress(asyncio.CancelledError):
            await printer  # prints what came before the goodbye
        reason = self.client.session.close_reason or "exit"
        if ended_by_broker and reason != "exit":
            self.notice(f"disconnected ({reason})")
            return _disconnected_status(reason)
        self.notice("you left the chat; bye")
        return _EXIT_OK

    async def run_fullscreen(self) -> int:
        """Join as in line mode, then the full-screen client; the exit status."""
        from client.fullscreen import FullScreen

        loop = asyncio.get_running_loop()
        for signum in _LEAVE_SIGNALS:
            loop.add_signal_handler(signum, self._stop.set)
        try:
            joining = asyncio.create_task(self.join())
            stopper = asyncio.create_task(self._stop.wait())
            await asyncio.wait({joining, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not joining.done():
                self.screen.interrupt()
            status = await joining
            stopper.cancel()
            if status is not None or self._stop.is_set():
                return status or _EXIT_OK
        finally:
            for signum in _LEAVE_SIGNALS:
                loop.remove_signal_handler(signum)
        try:
            screen = FullScreen(self.client, colour=self.screen.colour, bell=self.bell)
            if self.welcome is not None:
                screen.show(self.welcome)
            status = await screen.run()
        finally:
            await self._close_client()
        reason = self.client.session.close_reason or "exit"
        if status != _EXIT_OK and reason != "exit":
            self.notice(f"disconnected ({reason})")
            return _disconnected_status(reason)
        self.notice("you left the chat; bye")
        return _EXIT_OK

    @contextlib.contextmanager
    def _stdout_patched(self) -> Iterator[None]:
        if isinstance(self.screen, _TerminalScreen):
            # Anything else that prints (a warning, a stray print) also goes
            # above the input line instead of through it.
            with patch_stdout(raw=True):
                yield
        else:
            yield


async def run_interactive(args: argparse.Namespace) -> int:
    """Run the interactive client with ``chat-client``'s parsed arguments.

    Uses prompt_toolkit when stdin and stdout are terminals, plain lines
    otherwise. Returns the exit status: 0 after leaving, 1 if the broker could
    not be reached (or dropped us), 2 if it refused us for a reason other than
    the nickname, or for the nickname when input ended before another one.
    """
    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    chat = _Chat(args, terminal=terminal, colour=colour_wanted())
    if terminal and not getattr(args, "plain", False) and os.environ.get("TERM") != "dumb":
        return await chat.run_fullscreen()
    return await chat.run()
