"""How the interactive client shows events: styled text, no I/O.

:class:`Renderer` turns each :mod:`client.events` event into a :class:`Rendered`
(a list of ``(style, text)`` fragments, the shape prompt_toolkit's
``FormattedText`` takes, plus whether to ring the bell). The terminal front-end
(:mod:`client.tui`) only prints what it gets, so everything a user sees is
tested here without a terminal.

Text that came over the network (nicknames, room names, lines) always passes
through :func:`escape_terminal` first: a peer must never be able to move our
cursor, clear our screen, retitle our window or ring our bell.
"""

from __future__ import annotations

import re
import time
import unicodedata
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from client import events as ev

__all__ = [
    "MEANWHILE",
    "NICK_PALETTE",
    "Fragment",
    "Rendered",
    "Renderer",
    "escape_terminal",
    "highlight_mentions",
    "is_mention",
    "nick_style",
    "plain",
]

#: One piece of styled text: (prompt_toolkit style string, text).
Fragment = tuple[str, str]

#: Colours for nicknames. Chosen to stay readable on dark and light
#: backgrounds; red is left out because errors use it.
NICK_PALETTE: tuple[str, ...] = (
    "fg:ansicyan",
    "fg:ansigreen",
    "fg:ansiyellow",
    "fg:ansiblue",
    "fg:ansimagenta",
    "fg:ansibrightcyan",
    "fg:ansibrightgreen",
    "fg:ansibrightblue",
    "fg:ansibrightmagenta",
    "fg:ansibrightyellow",
)

# Styles by role, so a theme is one table.
#: How a join or leave seen only at a rejoin after a reconnect is marked.
MEANWHILE = "while we were away"

_TIME = "fg:ansibrightblack"
_DIM = "fg:ansibrightblack"
_OWN = "bold"
_PRIVATE = "fg:ansimagenta bold"
_MENTION = "reverse bold"
_ERROR = "fg:ansired bold"
_NOTICE = "fg:ansiyellow"
_GOOD = "fg:ansigreen"
_ROOM = "fg:ansibrightblack"
_SEPARATOR = "fg:ansibrightblack"

# Bidirectional overrides and isolates reorder what follows them on screen, so
# a line could pretend to be something else ("Trojan Source"); shown escaped.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escape_char(char: str) -> str:
    code = ord(char)
    if code < 0x20 or 0x7F <= code < 0xA0:
        return f"\\x{code:02x}"
    if char in _BIDI or unicodedata.category(char) in ("Cs", "Zl", "Zp"):
        return f"\\u{code:04x}"
    return char


# Everything that _escape_char changes, to find it in one pass.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff" + "".join(sorted(_BIDI)) + "]")


def escape_terminal(text: str) -> str:
    """``text`` with every character a terminal would act on shown visibly.

    C0 and C1 control characters and DEL become ``\\xNN`` (so ``ESC [2J``
    prints as ``\\x1b[2J`` and does nothing); line and paragraph separators,
    lone surrogates and bidirectional controls become ``\\uNNNN``. Printable
    Unicode, emoji sequences included, is kept as it is.
    """
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(lambda m: _escape_char(m.group()), text)


def nick_style(nick: str) -> str:
    """The colour of ``nick``: the same in every run and for every casing."""
    digest = zlib.crc32(nick.casefold().encode("utf-8", "surrogatepass"))
    return NICK_PALETTE[digest % len(NICK_PALETTE)]


def _mention_regex(nick: str) -> re.Pattern[str]:
    # A whole-word match: "al" is not mentioned by "also"; nicknames may
    # contain punctuation, so \b (which needs a word character) is not used.
    return re.compile(rf"(?<!\w){re.escape(nick)}(?!\w)", re.IGNORECASE)


def is_mention(text: str, nick: str) -> bool:
    """Whether ``text`` names ``nick`` as a word, ignoring case."""
    return bool(nick) and _mention_regex(nick).search(text) is not None


def highlight_mentions(text: str, nick: str) -> list[Fragment]:
    """``text`` escaped, as fragments, with each mention of ``nick`` highlighted."""
    safe = escape_terminal(text)
    out: list[Fragment] = []
    last = 0
    for match in _mention_regex(escape_terminal(nick)).finditer(safe):
        out += [("", safe[last : match.start()]), (_MENTION, match.group())]
        last = match.end()
    out.append(("", safe[last:]))
    return [piece for piece in out if piece[1]]


def plain(fragments: list[Fragment]) -> str:
    """The text of ``fragments`` without styles."""
    return "".join(text for _, text in fragments)


@dataclass
class Rendered:
    """What to print for one event (may be empty) and whether to ring the bell."""

    fragments: list[Fragment] = field(default_factory=list)
    bell: bool = False

    @property
    def text(self) -> str:
        """The plain text (lines separated by ``\\n``, no final newline)."""
        return plain(self.fragments)


@dataclass
class Renderer:
    """Turns events into styled lines for one user.

    ``nick`` and ``room`` (the current room) are kept up to date by the
    front-end; ``colour=False`` gives the same text with every style empty.
    ``width`` is the terminal's width, used for separators and tables.
    ``clock`` gives the local time for events that carry no server time.
    """

    nick: str = ""
    room: str | None = None
    colour: bool = True
    width: int = 80
    clock: Callable[[], float] = time.time
    # Rooms whose last shown line was replayed history: the next live line
    # there is preceded by a separator.
    _in_history: set[str] = field(default_factory=set)

    # --- entry point -------------------------------------------------------

    def render(self, event: ev.Event) -> Rendered:
        """The lines to show for ``event``."""
        method = getattr(self, "_on_" + type(event).__name__.lower(), None)
        if method is None:
            return Rendered()
        result: Rendered = method(event)
        if not self.colour:
            result.fragments = [("", text) for _, text in result.fragments]
        return result

    def notice(self, text: str, style: str = _NOTICE) -> Rendered:
        """A line of our own (connecting, goodbye...): a timestamp and ``text``."""
        return Rendered([*self._stamp(self.clock()), (style, f"-- {text}")])

    def prompt(self, state: str | None = None) -> str:
        """The input prompt: ``[nick #room] `` (and the link state if not joined)."""
        parts = [escape_terminal(self.nick)]
        if self.room:
            parts.append("#" + escape_terminal(self.room))
        if state:
            parts.append(f"({state})")
        return "[" + " ".join(parts) + "] "

    # --- helpers -------------------------------------------------------------

    @staticmethod
    def _stamp(ts: float) -> list[Fragment]:
        return [(_TIME, time.strftime("%H:%M", time.localtime(ts))), ("", " ")]

    def _own(self, nick: str) -> bool:
        return bool(self.nick) and nick.casefold() == self.nick.casefold()

    def _room_prefix(self, room: str) -> list[Fragment]:
        if room == self.room:
            return []
        return [(_ROOM, f"[#{escape_terminal(room)}]"), ("", " ")]

    def _nick(self, nick: str) -> Fragment:
        style = _OWN if self._own(nick) else nick_style(nick)
        return (style, escape_terminal(nick))

    def _text(self, text: str, mention: bool) -> list[Fragment]:
        """``text`` escaped, with mentions of our nickname highlighted."""
        if not mention:
            return [("", escape_terminal(text))]
        return highlight_mentions(text, self.nick)

    def _separator_if_live(self, room: str) -> list[Fragment]:
        if room not in self._in_history:
            return []
        self._in_history.discard(room)
        label = f" live #{escape_terminal(room)} "
        side = max(3, (self.width - len(label) - 1) // 2)
        return [(_SEPARATOR, "-" * side + label + "-" * side), ("", "\n")]

    def _dimmed(self, fragments: list[Fragment]) -> list[Fragment]:
        return [(_DIM, text) for _, text in fragments]

    def _line_note(self, room: str, ts: float, text: str) -> Rendered:
        """A dimmed notice about a room (join, leave...)."""
        frags = [*self._stamp(ts), *self._room_prefix(room), ("", f"-- {text}")]
        return Rendered([*self._separator_if_live(room), *self._dimmed(frags)])

    # --- one method per event type ----------------------------------------------

    def _on_message(self, event: ev.Message) -> Rendered:
        own = self._own(event.nick)
        mention = not own and not event.history and is_mention(event.text, self.nick)
        body: list[Fragment] = [*self._stamp(event.ts), *self._room_prefix(event.room)]
        if event.action:
            body += [("", "* "), self._nick(event.nick), ("", " ")]
        else:
            body += [("", "<"), self._nick(event.nick), ("", "> ")]
        body += self._text(event.text, mention)
        if event.history:
            self._in_history.add(event.room)
            return Rendered(self._dimmed(body))
        if own:
            body = [(f"{style} {_OWN}".strip(), text) for style, text in body]
        return Rendered([*self._separator_if_live(event.room), *body], bell=mention)

    def _on_private(self, event: ev.Private) -> Rendered:
        body: list[Fragment] = self._stamp(event.ts)
        own = self._own(event.nick)
        if own:
            body += [(_PRIVATE, "-> "), self._nick(event.to), (_PRIVATE, ": ")]
        else:
            body += [self._nick(event.nick), (_PRIVATE, " -> you: ")]
        if event.action:
            body += [("", "* "), self._nick(event.nick), ("", " ")]
        body += self._text(event.text, mention=False)
        return Rendered(body, bell=not own)

    def _on_join(self, event: ev.Join) -> Rendered:
        return self._line_note(
            event.room,
            event.ts,
            f"{escape_terminal(event.nick)} joined #{escape_terminal(event.room)}"
            + (f" ({MEANWHILE})" if event.meanwhile else ""),
        )

    def _on_leave(self, event: ev.Leave) -> Rendered:
        room = escape_terminal(event.room)
        reason = MEANWHILE if event.meanwhile else escape_terminal(event.reason)
        return self._line_note(
            event.room, event.ts, f"{escape_terminal(event.nick)} left #{room} ({reason})"
        )

    def _on_nick(self, event: ev.Nick) -> Rendered:
        old, new = escape_terminal(event.old), escape_terminal(event.new)
        if self._own(event.old) or self._own(event.new):
            self.nick = event.new
            return self.notice(f"you are now known as {new}", _DIM)
        return self.notice(f"{old} is now known as {new}", _DIM)

    def _on_welcome(self, event: ev.Welcome) -> Rendered:
        self.nick = event.nick
        self.room = event.room
        others = [m for m in event.members if not self._own(m)]
        here = ", ".join(escape_terminal(m) for m in others) if others else "nobody else yet"
        text = (
            f"you are {escape_terminal(event.nick)} in #{escape_terminal(event.room)}; "
            f"here: {here}. /help for help"
        )
        return self._with_topic(self.notice(text, _GOOD), event.room, event.topic)

    def _on_joined(self, event: ev.Joined) -> Rendered:
        others = [m for m in event.members if not self._own(m)]
        here = ", ".join(escape_terminal(m) for m in others) if others else "nobody else"
        joined = self.notice(f"you joined #{escape_terminal(event.room)}; here: {here}", _GOOD)
        return self._with_topic(joined, event.room, event.topic)

    def _with_topic(self, rendered: Rendered, room: str, topic: str) -> Rendered:
        """``rendered`` and, on a line of its own, the room's topic if it has one."""
        if topic:
            line = self.notice(f"topic of #{escape_terminal(room)}: {escape_terminal(topic)}", "")
            rendered.fragments += [("", "\n"), *line.fragments]
        return rendered

    def _on_parted(self, event: ev.Parted) -> Rendered:
        self._in_history.discard(event.room)
        return self.notice(f"you left #{escape_terminal(event.room)}", _DIM)

    def _on_who(self, event: ev.Who) -> Rendered:
        names = ", ".join(
            escape_terminal(m)
            + (f" (away: {escape_terminal(event.away[m])})" if m in event.away else "")
            for m in sorted(event.members, key=str.casefold)
        )
        count = len(event.members)
        if not count:
            return self.notice(f"nobody is in #{escape_terminal(event.room)}", "")
        return self.notice(f"#{escape_terminal(event.room)} ({count}): {names}", "")

    def _on_topic(self, event: ev.Topic) -> Rendered:
        room = escape_terminal(event.room)
        text = escape_terminal(event.text)
        who = escape_terminal(event.nick)
        if event.changed:
            said = (
                f"{who} set the topic of #{room}: {text}"
                if text
                else f"{who} cleared the topic of #{room}"
            )
            return self._line_note(event.room, event.ts, said)
        if not text:
            return self.notice(f"#{room} has no topic", "")
        by = f" (set by {who} {self._when(event.ts)})" if who else ""
        return self.notice(f"topic of #{room}: {text}{by}", "")

    def _on_away(self, event: ev.Away) -> Rendered:
        nick, text = escape_terminal(event.nick), escape_terminal(event.text)
        if self._own(event.nick):
            if text:
                return self.notice(f"you are away: {text} (/back when you are back)", _DIM)
            return self.notice("you are back", _DIM)
        if event.auto:
            return self.notice(f"{nick} is away: {text}", _NOTICE)
        return self.notice(f"{nick} is away: {text}" if text else f"{nick} is back", _DIM)

    def _when(self, ts: float) -> str:
        """``HH:MM`` today, ``YYYY-MM-DD HH:MM`` on any other day."""
        local, today = time.localtime(ts), time.localtime(self.clock())
        if local[:3] == today[:3]:
            return time.strftime("%H:%M", local)
        return time.strftime("%Y-%m-%d %H:%M", local)

    def _on_rooms(self, event: ev.Rooms) -> Rendered:
        if not event.rooms:
            return self.notice("no rooms", "")
        listed = ", ".join(
            f"#{escape_terminal(r.room)} ({r.members})"
            for r in sorted(event.rooms, key=lambda r: r.room)
        )
        return self.notice(f"rooms: {listed}", "")

    def _on_missed(self, event: ev.Missed) -> Rendered:
        if event.reset:
            never = f" ({event.count} unseen lines gone)" if event.count else ""
            return self.notice(
                f"#{escape_terminal(event.room)} starts afresh: broker history lost{never}",
                _NOTICE,
            )
        lines = "line is" if event.count == 1 else "lines are"
        return self.notice(
            f"{event.count} {lines} missing in #{escape_terminal(event.room)} "
            "(gone from the broker's history)",
            _NOTICE,
        )

    def _on_historyend(self, event: ev.HistoryEnd) -> Rendered:
        room = escape_terminal(event.room)
        if event.count == 0:
            return self.notice(f"no older lines in #{room}", _NOTICE)
        lines = "line" if event.count == 1 else "lines"
        return self.notice(f"{event.count} older {lines} of #{room} above", _NOTICE)

    def _on_error(self, event: ev.Error) -> Rendered:
        text = f"{escape_terminal(event.message)} [{escape_terminal(event.code)}]"
        if event.text is not None:
            text += f" (not sent: {escape_terminal(event.text)})"
        return Rendered([*self._stamp(self.clock()), (_ERROR, f"!! {text}")])

    def _on_connection(self, event: ev.Connection) -> Rendered:
        if event.state == "reconnecting":
            if event.shutdown:
                return Rendered()  # the shutdown notice just before said it all
            return self.notice("lost the broker; reconnecting...", _ERROR)
        if event.state == "reconnected":
            if event.moved:
                # A failover: the session, nickname and rooms are as they were.
                where = escape_terminal(event.endpoint or event.broker)
                return self.notice(f"moved to broker {where}; nothing lost", _GOOD)
            said = "reconnected (the broker restarted)" if event.restarted else "reconnected"
            if event.endpoint:
                # Several brokers (failover): say which one took us back.
                where = f"reconnected to {escape_terminal(event.endpoint)}"
                said = said.replace("reconnected", where, 1)
            return self.notice(said, _GOOD)
        if event.state == "auth_failed":
            # A refusal while reconnecting, others left to try (docs/SECURITY.md).
            return self.notice(
                f"the broker at {escape_terminal(event.endpoint)} refused our key "
                "(authentication failed); trying the other brokers...",
                _ERROR,
            )
        if event.state == "waiting_for_nick":
            return self.notice(
                "your old session still holds your nickname; waiting for it to time out"
                f" (trying for up to {event.wait:g} s)...",
                _ERROR,
            )
        return self.notice(escape_terminal(event.state), _NOTICE)

    def _on_shutdown(self, event: ev.Shutdown) -> Rendered:
        reason = escape_terminal(event.reason)
        # The broker's reason usually says it already; don't say it twice.
        said = (
            reason
            if "shutting down" in reason.lower()
            else f"the broker is shutting down ({reason})"
        )
        then = "moving to another broker..." if event.moving else "will reconnect when it is back"
        return self.notice(f"{said}; {then}", _ERROR)

    def _on_help(self, event: ev.Help) -> Rendered:
        usage_width = max((len(c.usage) for c in event.commands), default=0) + 2
        frags: list[Fragment] = [("bold", "Commands:")]
        for command in event.commands:
            line = f"  {command.usage:<{usage_width}}{command.description}"
            frags += [("", "\n"), ("", line[: max(self.width - 1, 20)])]
        frags += [
            ("", "\n"),
            (
                "",
                "  Tab completes nicknames and commands; Up/Down recall lines; Ctrl-D leaves."[
                    : max(self.width - 1, 20)
                ],
            ),
        ]
        return Rendered(frags)
