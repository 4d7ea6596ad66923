"""The keys of the full-screen client (docs/CLIENT.md, "Keys" and "Windows").

Every binding only calls into :class:`client.fullscreen.FullScreen` (or its
screen model): what a key does is decided there and in :mod:`client.screen`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prompt_toolkit.filters import Condition
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys

if TYPE_CHECKING:
    from client.fullscreen import FullScreen

__all__ = ["key_bindings"]


def key_bindings(chat: FullScreen) -> KeyBindings:
    """The bindings of ``chat``'s application."""
    kb = KeyBindings()
    pasting = Condition(lambda: bool(chat.paste_pending))

    @kb.add("enter", filter=~pasting)
    def _enter(event: KeyPressEvent) -> None:
        line = chat.buffer.text
        chat.buffer.reset()
        if line.strip():
            chat.screen.window.history.add(line)
            chat.spawn(chat.handle_line(line))

    @kb.add("c-c", filter=~pasting)
    def _interrupt(event: KeyPressEvent) -> None:
        if chat.buffer.text:
            chat.buffer.reset()  # as in bash, irssi and WeeChat
        else:
            chat.app.exit(result=0)

    @kb.add("c-d", filter=~pasting)
    def _eof(event: KeyPressEvent) -> None:
        if chat.buffer.text:
            chat.buffer.delete()
        else:
            chat.app.exit(result=0)

    @kb.add("c-l")
    def _redraw(event: KeyPressEvent) -> None:
        chat.app.renderer.clear()
        chat.redraw()

    @kb.add(Keys.BracketedPaste)
    def _pasted(event: KeyPressEvent) -> None:
        chat.pasted(event.data)

    @kb.add("y", filter=pasting)
    def _paste_yes(event: KeyPressEvent) -> None:
        lines, chat.paste_pending = chat.paste_pending, []
        chat.spawn(chat.send_lines(lines))

    @kb.add("<any>", filter=pasting)
    def _paste_no(event: KeyPressEvent) -> None:
        count, chat.paste_pending = len(chat.paste_pending), []
        chat.screen.notice(f"paste of {count} lines dropped")

    @kb.add("pageup")
    def _page_up(event: KeyPressEvent) -> None:
        chat.screen.page(chat.size()[1] - 3, up=True)

    @kb.add("pagedown")
    def _page_down(event: KeyPressEvent) -> None:
        chat.screen.page(chat.size()[1] - 3, up=False)

    @kb.add("up", filter=~pasting)
    def _older(event: KeyPressEvent) -> None:
        line = chat.screen.window.history.older(chat.buffer.text)
        if line is not None:
            chat.buffer.text = line
            chat.buffer.cursor_position = len(line)

    @kb.add("down", filter=~pasting)
    def _newer(event: KeyPressEvent) -> None:
        line = chat.screen.window.history.newer()
        if line is not None:
            chat.buffer.text = line
            chat.buffer.cursor_position = len(line)

    @kb.add("f2")
    def _toggle_names(event: KeyPressEvent) -> None:
        chat.screen.nicklist = not chat.screen.nicklist

    for digit in "1234567890":

        @kb.add("escape", digit)
        def _window(event: KeyPressEvent, number: int = int(digit) or 10) -> None:
            chat.switch(number - 1)

    @kb.add("escape", "left")
    @kb.add("c-p")
    def _previous(event: KeyPressEvent) -> None:
        chat.switch(chat.screen.current - 1, wrap=True)

    @kb.add("escape", "right")
    @kb.add("c-n")
    def _next(event: KeyPressEvent) -> None:
        chat.switch(chat.screen.current + 1, wrap=True)

    return kb
