"""Laying out one line of the full-screen client in rows of a given width.

Pure functions: the time column (:func:`stamp`), wrapping with the
continuation rows indented under the text (:func:`layout_entry`), and the
centred rows of day changes and the live separator (:func:`center`). Widths
are terminal cells (a CJK character or an emoji takes two).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prompt_toolkit.utils import get_cwidth

from client.render import Fragment

__all__ = [
    "MAX_INDENT_SHARE",
    "Entry",
    "center",
    "day_label",
    "layout_entry",
    "stamp",
    "text_width",
]

_TIME = "fg:ansibrightblack"
_DIM = "fg:ansibrightblack"

#: Continuation rows are indented under the text, but never by more than
#: this share of the width (a long nickname must not squeeze the text away).
MAX_INDENT_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a window: when, a prefix (``<nick> ``), the text, and how to show it.

    ``prefix`` and ``body`` are fragments already escaped. Entries sort by
    ``ts`` (then by ``order``, the arrival order, for equal stamps).
    """

    ts: float
    order: int
    prefix: tuple[Fragment, ...]
    body: tuple[Fragment, ...]
    history: bool = False

    def __lt__(self, other: Entry) -> bool:
        return (self.ts, self.order) < (other.ts, other.order)


def stamp(ts: float, now: float) -> str:
    """The time column: ``HH:MM`` today, ``MM-DD HH:MM`` on another day of this
    year, ``YYYY-MM-DD HH:MM`` before."""
    local, today = time.localtime(ts), time.localtime(now)
    if local[:3] == today[:3]:
        return time.strftime("%H:%M", local)
    if local.tm_year == today.tm_year:
        return time.strftime("%m-%d %H:%M", local)
    return time.strftime("%Y-%m-%d %H:%M", local)


def day_label(ts: float) -> str:
    """The text of a day-change row for the day of ``ts``."""
    return time.strftime("Day changed to %A %d %B %Y", time.localtime(ts))


def text_width(text: str) -> int:
    """How many terminal cells ``text`` takes."""
    return sum(max(0, get_cwidth(c)) for c in text)


def _cut(fragments: list[Fragment], width: int) -> tuple[list[Fragment], list[Fragment]]:
    """Split ``fragments`` after at most ``width`` columns, at a space if one is near."""
    taken: list[Fragment] = []
    used = 0
    for index, (style, text) in enumerate(fragments):
        for pos, char in enumerate(text):
            cw = max(0, get_cwidth(char))
            if used + cw > width:
                head = [*taken, (style, text[:pos])]
                tail = [(style, text[pos:]), *fragments[index + 1 :]]
                return _break_at_space(head, tail, width)
            used += cw
        taken.append((style, text))
    return taken, []


def _break_at_space(
    head: list[Fragment], tail: list[Fragment], width: int
) -> tuple[list[Fragment], list[Fragment]]:
    """Move the word cut in two to the next row, if a space is in the last third."""
    flat = "".join(t for _, t in head)
    space = flat.rfind(" ")
    if space < width * 2 // 3 or space == len(flat) - 1:
        return [f for f in head if f[1]], [f for f in tail if f[1]]
    # Walk back to the fragment holding that space.
    keep = space + 1
    new_head: list[Fragment] = []
    new_tail: list[Fragment] = []
    seen = 0
    for style, text in head:
        if seen + len(text) <= keep:
            new_head.append((style, text))
        elif seen >= keep:
            new_tail.append((style, text))
        else:
            new_head.append((style, text[: keep - seen]))
            new_tail.append((style, text[keep - seen :]))
        seen += len(text)
    return [f for f in new_head if f[1]], [f for f in new_tail + tail if f[1]]


def layout_entry(entry: Entry, width: int, now: float) -> list[list[Fragment]]:
    """The rows of one entry at ``width`` columns: the time, the prefix and
    the text, continuation rows indented to where the text began."""
    head: list[Fragment] = [(_TIME, stamp(entry.ts, now)), ("", " "), *entry.prefix]
    body = list(entry.body)
    if entry.history:
        head = [(_DIM, t) for _, t in head]
        body = [(_DIM, t) for _, t in body]
    head_width = text_width("".join(t for _, t in head))
    if head_width + 8 > width:
        # Too narrow for text beside the prefix: the prefix wraps like text.
        indent = 2
        first, rest = _cut(head + body, width)
    else:
        indent = head_width if head_width <= width * MAX_INDENT_SHARE else 2
        first, rest = _cut(body, width - head_width)
        first = head + first
    rows: list[list[Fragment]] = [first]
    while rest:
        piece, rest = _cut(_lstrip(rest), width - indent)
        rows.append([("", " " * indent), *piece])
    return rows


def _lstrip(fragments: list[Fragment]) -> list[Fragment]:
    if fragments and fragments[0][1].startswith(" "):
        style, text = fragments[0]
        stripped = text.lstrip(" ")
        return [(style, stripped), *fragments[1:]] if stripped else fragments[1:]
    return fragments


def center(text: str, width: int, fill: str = "-") -> str:
    """``text`` centred in ``width`` cells between runs of ``fill``."""
    label = f" {text} " if fill == "-" and not text.startswith(" ") else text
    side = max(2, (width - text_width(label)) // 2)
    return (fill * side + label + fill * side)[: max(width, 1)]
