"""The full-screen client's screen model: windows, their lines, and rows to draw.

Pure: no terminal, no prompt_toolkit application, time as a parameter. The
front-end (:mod:`client.fullscreen`) feeds events in through
:meth:`Screen.add_event` and asks for what to draw (:meth:`Screen.rows`,
:meth:`Screen.status`, :meth:`Screen.title`, :meth:`Screen.nick_rows`);
everything a user sees is decided, and tested, here.

* A **window** per room and per private conversation (a *query*), in the
  order they were opened; the number a user types with Alt-1…9 or
  ``/window N`` is the position, from 1.
* Each window keeps its **entries** in time order: history lines fetched
  later (``/history``) go where they belong, not at the bottom; they are
  dimmed, and a ``live`` separator marks where replayed lines end.
* **Rows** are laid out for a width: a day-change row where the date
  changes (and above the first line when it is not from today), the date
  in the time column of any line not from today, and wrapped lines
  indented under the text, not under the time.
* **Activity**: a window not on screen that gets a line is *unread*; one
  that gets a line naming us, or a private line, is a *mention*.

Everything that came over the network is escaped (:func:`escape_terminal`)
before it is stored in an entry or drawn in a bar.
"""

from __future__ import annotations

import time
from bisect import insort
from dataclasses import dataclass, field
from enum import IntEnum

from client import events as ev
from client.layout import Entry, center, day_label, layout_entry, text_width
from client.render import (
    MEANWHILE,
    Fragment,
    Renderer,
    escape_terminal,
    highlight_mentions,
    is_mention,
    nick_style,
)

__all__ = [
    "NICKLIST_MIN_COLUMNS",
    "NICKLIST_WIDTH",
    "Activity",
    "InputHistory",
    "Screen",
    "Window",
]

# Styles by role (prompt_toolkit style strings), as in client/render.py.
_DIM = "fg:ansibrightblack"
_NOTE = "fg:ansibrightblack"
_DAY = "fg:ansiyellow"
_SEPARATOR = "fg:ansibrightblack"
_OWN = "bold"
_PRIVATE = "fg:ansimagenta bold"

#: The widest nickname column the nick list takes, and the narrowest
#: terminal it is shown on when toggled on (below that the text needs the room).
NICKLIST_WIDTH = 14
NICKLIST_MIN_COLUMNS = 60
#: Lines kept per window (the oldest go first): scrollback for a long day.
MAX_ENTRIES = 5000


class Activity(IntEnum):
    """What a window not on screen has that you have not seen."""

    NONE = 0
    UNREAD = 1
    MENTION = 2


class InputHistory:
    """What was typed in one window, walked with Up and Down.

    The line being typed when Up is first pressed is kept as a draft and
    comes back after the newest entry.
    """

    def __init__(self, limit: int = 500) -> None:
        self.lines: list[str] = []
        self._limit = limit
        self._pos: int | None = None
        self._draft = ""

    def add(self, line: str) -> None:
        """Remember a line that was sent (not twice in a row)."""
        if line and (not self.lines or self.lines[-1] != line):
            self.lines.append(line)
            del self.lines[: -self._limit]
        self._pos = None

    def older(self, current: str) -> str | None:
        """The line before, or None at the oldest."""
        if not self.lines:
            return None
        if self._pos is None:
            self._draft = current
            self._pos = len(self.lines)
        if self._pos == 0:
            return None
        self._pos -= 1
        return self.lines[self._pos]

    def newer(self) -> str | None:
        """The line after (the draft after the newest), or None if not walking."""
        if self._pos is None:
            return None
        self._pos += 1
        if self._pos >= len(self.lines):
            self._pos = None
            return self._draft
        return self.lines[self._pos]


@dataclass
class Window:
    """A room (``#name``) or a private conversation with one nickname."""

    name: str
    private: bool = False
    entries: list[Entry] = field(default_factory=list)
    activity: Activity = Activity.NONE
    #: Rows scrolled up from the bottom (0: following new lines).
    scroll: int = 0
    #: Entries added at the bottom while scrolled up, not yet in ``scroll``.
    arrived: int = 0
    history: InputHistory = field(default_factory=InputHistory)
    #: What was typed but not sent when the user switched away.
    draft: str = ""

    @property
    def label(self) -> str:
        """How the window is named in bars: ``#room`` or the nickname (escaped)."""
        return escape_terminal(self.name) if self.private else "#" + escape_terminal(self.name)


class Screen:
    """Every window and what to show; see the module docstring.

    ``me`` is our nickname (kept current by the front-end); ``clock`` gives
    local time for entries that carry none (notices, errors).
    """

    def __init__(self, me: str = "", clock: object = None) -> None:
        self.me = me
        self.windows: list[Window] = []
        self.current = 0
        self.ignored: set[str] = set()
        self.nicklist = True
        self._renderer = Renderer(nick=me, colour=True)
        self._order = 0
        self._clock = clock if callable(clock) else time.time

    # --- windows -------------------------------------------------------------

    def now(self) -> float:
        """The local time (the clock given at construction)."""
        value = self._clock()
        assert isinstance(value, float | int)
        return float(value)

    @property
    def window(self) -> Window:
        """The window on screen (a placeholder before the first room)."""
        if not self.windows:
            self.windows.append(Window(name="status", private=True))
        return self.windows[self.current]

    def find(self, name: str, private: bool = False) -> Window | None:
        """The window of a room or of a nickname (case-insensitive), if open."""
        key = name.casefold()
        for window in self.windows:
            if window.private == private and window.name.casefold() == key:
                return window
        return None

    def open(self, name: str, private: bool = False, focus: bool = False) -> Window:
        """The window of ``name``, opened (at the end) if it is not yet."""
        window = self.find(name, private)
        if window is None:
            placeholder = [w for w in self.windows if w.private and w.name == "status"]
            if placeholder and not placeholder[0].entries and len(self.windows) == 1:
                self.windows.clear()  # the placeholder made way for the first real window
            window = Window(name=name, private=private)
            self.windows.append(window)
        if focus:
            self.switch(self.windows.index(window))
        return window

    def close(self, window: Window) -> None:
        """Forget a window (after /part or /close); the neighbour shows."""
        if window not in self.windows:
            return
        index = self.windows.index(window)
        self.windows.remove(window)
        if self.current >= index and self.current > 0:
            self.current -= 1
        self.current = min(self.current, max(0, len(self.windows) - 1))
        if self.windows:
            self.windows[self.current].activity = Activity.NONE

    def switch(self, index: int) -> bool:
        """Show window ``index`` (from 0); False if there is none."""
        if not 0 <= index < len(self.windows):
            return False
        self.current = index
        self.windows[index].activity = Activity.NONE
        return True

    def step(self, delta: int) -> None:
        """Show the next (``+1``) or previous (``-1``) window, wrapping around."""
        if self.windows:
            self.switch((self.current + delta) % len(self.windows))

    # --- entries -----------------------------------------------------------

    def add(
        self,
        window: Window,
        prefix: list[Fragment],
        body: list[Fragment],
        ts: float | None = None,
        *,
        history: bool = False,
        activity: Activity = Activity.NONE,
    ) -> None:
        """Add a line to ``window`` in time order and mark its activity."""
        self._order += 1
        entry = Entry(
            ts=self.now() if ts is None else ts,
            order=self._order,
            prefix=tuple(prefix),
            body=tuple(body),
            history=history,
        )
        if not window.entries or not entry < window.entries[-1]:
            window.entries.append(entry)
            if window.scroll:
                # Below the view: counted in rows at the next layout, so what
                # the reader is looking at stays in place while scrolled up.
                window.arrived += 1
        else:
            insort(window.entries, entry)
        if len(window.entries) > MAX_ENTRIES:
            del window.entries[: len(window.entries) - MAX_ENTRIES]
        if window is not self.window and activity > window.activity:
            window.activity = activity

    def notice(self, text: str, style: str = _NOTE, window: Window | None = None) -> None:
        """A line of our own (``text`` must already be escaped)."""
        self.add(window or self.window, [], [(style, f"-- {text}")])

    def add_event(self, event: ev.Event, rooms_of: dict[str, list[str]]) -> None:
        """Put ``event`` in the window it belongs to.

        ``rooms_of`` maps each room we are in to its members (the session's
        view), to place nickname changes and away notices.
        """
        self._renderer.nick = self.me
        if isinstance(event, ev.Message):
            self._message(event)
        elif isinstance(event, ev.Private):
            self._private(event)
        elif isinstance(event, (ev.Welcome, ev.Joined)):
            window = self.open(event.room, focus=True)
            others = [
                escape_terminal(m) for m in event.members if m.casefold() != self.me.casefold()
            ]
            here = ", ".join(others) if others else "nobody else yet"
            self.notice(f"you are in #{escape_terminal(event.room)}; here: {here}", window=window)
            if event.topic:
                self.notice(f"topic: {escape_terminal(event.topic)}", window=window)
        elif isinstance(event, ev.Parted):
            left = self.find(event.room)
            if left is not None:
                self.close(left)
            self.notice(f"you left #{escape_terminal(event.room)}")
        elif isinstance(event, (ev.Join, ev.Leave)):
            if event.nick.casefold() in self.ignored:
                return
            window = self.open(event.room)
            nick = escape_terminal(event.nick)
            if isinstance(event, ev.Join):
                text = f"{nick} joined" + (f" ({MEANWHILE})" if event.meanwhile else "")
            else:
                reason = MEANWHILE if event.meanwhile else escape_terminal(event.reason)
                text = f"{nick} left ({reason})"
            self.add(window, [], [(_NOTE, f"-- {text}")], event.ts)
        elif isinstance(event, ev.Nick):
            text = f"{escape_terminal(event.old)} is now {escape_terminal(event.new)}"
            if (
                event.old.casefold() == self.me.casefold()
                or event.new.casefold() == self.me.casefold()
            ):
                self.me = event.new
                text = f"you are now {escape_terminal(event.new)}"
            for window in self._windows_with(event.new, rooms_of) or [self.window]:
                self.notice(text, window=window)
        elif isinstance(event, ev.Topic):
            window = self.find(event.room) or self.window
            who = escape_terminal(event.nick)
            text = escape_terminal(event.text)
            if event.changed:
                said = f"{who} set the topic: {text}" if text else f"{who} cleared the topic"
                self.add(window, [], [(_NOTE, f"-- {said}")], event.ts, activity=Activity.UNREAD)
            elif text:
                self.notice(
                    f"topic of #{escape_terminal(event.room)}: {text} (set by {who})", window=window
                )
            else:
                self.notice(f"#{escape_terminal(event.room)} has no topic", window=window)
        elif isinstance(event, ev.Away):
            self._away(event, rooms_of)
        elif isinstance(event, (ev.Missed, ev.HistoryEnd)):
            self._rendered(event, self.find(event.room) or self.window)
        else:
            self._rendered(event, self.window)

    def _windows_with(self, nick: str, rooms_of: dict[str, list[str]]) -> list[Window]:
        found = []
        for room, members in rooms_of.items():
            window = self.find(room)
            if window is not None and any(m.casefold() == nick.casefold() for m in members):
                found.append(window)
        query = self.find(nick, private=True)
        if query is not None:
            found.append(query)
        return found

    def _message(self, event: ev.Message) -> None:
        if event.nick.casefold() in self.ignored:
            return
        own = event.nick.casefold() == self.me.casefold()
        mention = not own and not event.history and is_mention(event.text, self.me)
        nick = (_OWN if own else nick_style(event.nick), escape_terminal(event.nick))
        prefix: list[Fragment] = (
            [("", "* "), nick, ("", " ")] if event.action else [("", "<"), nick, ("", "> ")]
        )
        body = self._highlight(event.text, mention)
        window = self.open(event.room)
        activity = Activity.NONE if event.history else Activity.UNREAD
        if mention:
            activity = Activity.MENTION
        self.add(window, prefix, body, event.ts, history=event.history, activity=activity)

    def _private(self, event: ev.Private) -> None:
        own = event.nick.casefold() == self.me.casefold()
        peer = event.to if own else event.nick
        if not own and event.nick.casefold() in self.ignored:
            return
        window = self.open(peer, private=True)
        nick = (_OWN if own else _PRIVATE, escape_terminal(event.nick))
        prefix: list[Fragment] = (
            [("", "* "), nick, ("", " ")] if event.action else [("", "<"), nick, ("", "> ")]
        )
        activity = Activity.NONE if own else Activity.MENTION
        self.add(window, prefix, self._highlight(event.text, False), event.ts, activity=activity)

    def _away(self, event: ev.Away, rooms_of: dict[str, list[str]]) -> None:
        nick, text = escape_terminal(event.nick), escape_terminal(event.text)
        if event.nick.casefold() == self.me.casefold():
            self.notice(f"you are away: {text} (/back when back)" if text else "you are back")
            return
        if event.auto:
            window = self.find(event.nick, private=True) or self.window
            self.notice(f"{nick} is away: {text}", window=window)
            return
        said = f"{nick} is away: {text}" if text else f"{nick} is back"
        for window in self._windows_with(event.nick, rooms_of):
            self.notice(said, window=window)

    def _highlight(self, text: str, mention: bool) -> list[Fragment]:
        safe = escape_terminal(text)
        if not mention:
            return [("", safe)]
        return highlight_mentions(text, self.me)

    def _rendered(self, event: ev.Event, window: Window) -> None:
        """Anything else, as the line-mode renderer words it (no time stamp)."""
        self._renderer.room = window.name
        self._renderer.width = 80
        fragments = self._renderer.render(event).fragments
        if fragments and fragments[0][0] == "fg:ansibrightblack" and len(fragments) > 1:
            fragments = fragments[2:]  # its HH:MM and space: our time column has it
        line: list[Fragment] = []
        for style, text in fragments:
            pieces = text.split("\n")
            for index, piece in enumerate(pieces):
                if index:
                    self.add(window, [], line)
                    line = []
                if piece:
                    line.append((style, piece))
        if line:
            self.add(window, [], line)

    # --- what to draw --------------------------------------------------------

    def rows(self, width: int, height: int, window: Window | None = None) -> list[list[Fragment]]:
        """The ``height`` rows of a window's text area (bottom-aligned), honouring
        its scroll position; the scroll is clamped to what there is.

        Only the entries that can show are laid out, newest first: a redraw
        costs the screen's height, not the window's whole scrollback.
        """
        if window is None:
            window = self.window
        now = self.now()
        today = time.localtime(now)[:3]
        entries = window.entries
        if window.arrived:
            new = entries[-window.arrived :] if window.arrived <= len(entries) else entries
            window.scroll += sum(len(layout_entry(entry, width, now)) for entry in new)
            window.arrived = 0
        needed = height + window.scroll
        blocks: list[list[list[Fragment]]] = []
        count = 0
        complete = True
        for index in range(len(entries) - 1, -1, -1):
            if count >= needed:
                complete = False
                break
            entry = entries[index]
            previous = entries[index - 1] if index else None
            day = time.localtime(entry.ts)[:3]
            block: list[list[Fragment]] = []
            if (previous is None and day != today) or (
                previous is not None and time.localtime(previous.ts)[:3] != day
            ):
                block.append([(_DAY, center(day_label(entry.ts), width))])
            if previous is not None and previous.history and not entry.history:
                block.append([(_SEPARATOR, center(" live ", width, "-"))])
            block += layout_entry(entry, width, now)
            blocks.append(block)
            count += len(block)
        laid = [row for block in reversed(blocks) for row in block]
        if complete:
            window.scroll = max(0, min(window.scroll, len(laid) - height))
        end = len(laid) - window.scroll
        visible = laid[max(0, end - height) : end]
        return [[]] * (height - len(visible)) + visible

    def page(self, height: int, up: bool) -> None:
        """PageUp/PageDown: move the current window's view by a page less a row."""
        step = max(1, height - 1)
        window = self.window
        window.scroll = max(0, window.scroll + (step if up else -step))
        if not window.scroll:
            window.arrived = 0

    def title(self, topics: dict[str, str]) -> str:
        """The title row: the window's name and the room's topic, escaped."""
        window = self.window
        if window.private:
            return f"{window.label}: private conversation"
        topic = topics.get(window.name, "")
        return f"{window.label}: {escape_terminal(topic)}" if topic else window.label

    def status(self, state: str, clock: float | None = None) -> list[Fragment]:
        """The status row: time, nickname, window and state, and activity."""
        window = self.window
        now = self.now() if clock is None else clock
        parts: list[Fragment] = [
            ("", f"[{time.strftime('%H:%M', time.localtime(now))}] "),
            ("bold", f"[{escape_terminal(self.me)}] "),
            ("", f"[{self.current + 1}:{window.label}] "),
        ]
        if state != "connected":
            parts.append(("fg:ansired bold", f"[{state}] "))
        else:
            parts.append(("", "[connected] "))
        if window.scroll:
            parts.append(("fg:ansiyellow", "[more] "))
        active = [
            (number, w)
            for number, w in enumerate(self.windows, start=1)
            if w.activity is not Activity.NONE
        ]
        if active:
            parts.append(("", "[act: "))
            for index, (number, w) in enumerate(active):
                if index:
                    parts.append(("", ","))
                if w.activity is Activity.MENTION:
                    parts.append(("fg:ansimagenta bold", f"{number}!"))
                else:
                    parts.append(("fg:ansiwhite", f"{number}"))
            parts.append(("", "]"))
        return parts

    def nick_rows(
        self, members: list[str], away: dict[str, str], height: int
    ) -> list[list[Fragment]]:
        """The nick list column: a count, then the names (away ones dimmed,
        marked ``-``), cut to fit; escaped."""
        width = NICKLIST_WIDTH
        rows: list[list[Fragment]] = [[("bold", f"{len(members)} here"[:width])]]
        names = sorted(members, key=str.casefold)
        room = height - 1
        if len(names) > room:
            shown, more = names[: max(0, room - 1)], len(names) - max(0, room - 1)
        else:
            shown, more = names, 0
        for nick in shown:
            label = escape_terminal(nick)
            if text_width(label) > width - 2:
                label = label[: width - 3] + "…"
            if nick in away:
                rows.append([(_DIM, f"-{label}")])
            else:
                rows.append([(nick_style(nick), f" {label}")])
        if more:
            rows.append([(_DIM, f"+{more} more")])
        return rows + [[]] * max(0, height - len(rows))
