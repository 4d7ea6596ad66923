"""The one checker of the fault-injection suite: nothing lost, nothing twice.

Pure: it takes what the senders were given and what every client printed
(``chat-client --json`` events as dicts) and returns the figures that
docs/RELIABILITY.md reports. The rules it applies:

- A line is *acknowledged* unless its sender reported it undelivered (an
  ``error`` event carrying its text and key). Every acknowledged line must
  reach every receiver exactly once: ``lost`` counts (line, receiver) pairs
  where it never came, ``duplicated`` each extra copy.
- A line reported undelivered must not have been stored: one that a receiver
  shows anyway counts as ``false_undelivered``.
- Per receiver and room the ``seq`` of lines shown is strictly increasing
  (``out_of_order``) and contiguous, except where a ``missed`` event says
  how many are gone (``gaps`` counts unexplained holes).
- Each sender's lines should reach each receiver in the order they were
  sent: ``reordered`` counts (sender, receiver) pairs where they did not.
  It is reported, not required: a line the broker refused with a retryable
  code (``unavailable``, ``rate_limited``) is resent after its successors
  went (docs/RELIABILITY.md, "Findings").
- A receiver that did not get everything within the test's deadline is
  ``stuck`` (its room stopped delivering, or it died).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]

__all__ = ["Event", "Figures", "check", "line_text", "missing"]


def line_text(sender: str, number: int) -> str:
    """The text of a sender's ``number``-th line: who and which, so the
    checker can tell every line apart."""
    return f"{sender} #{number:06d}"


@dataclass
class Figures:
    """What one run showed (docs/RELIABILITY.md)."""

    sent: int = 0
    acknowledged: int = 0
    undelivered: int = 0
    receivers: int = 0
    lost: int = 0
    duplicated: int = 0
    false_undelivered: int = 0
    out_of_order: int = 0
    gaps: int = 0
    reordered: int = 0
    stuck: int = 0
    #: Senders whose exit status did not match what they reported (set by the harness).
    bad_exits: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing twice, everything in order."""
        return not (
            self.lost
            or self.duplicated
            or self.false_undelivered
            or self.out_of_order
            or self.gaps
            or self.stuck
            or self.bad_exits
        )

    def add(self, other: Figures) -> None:
        """Sum another run into this one."""
        for name in (
            "sent",
            "acknowledged",
            "undelivered",
            "receivers",
            "lost",
            "duplicated",
            "false_undelivered",
            "out_of_order",
            "gaps",
            "reordered",
            "stuck",
            "bad_exits",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.problems += other.problems

    def summary(self) -> str:
        """One line for the test's output and the report."""
        return (
            f"sent {self.sent}, acknowledged {self.acknowledged}, undelivered "
            f"{self.undelivered}, receivers {self.receivers}: lost {self.lost}, "
            f"duplicated {self.duplicated}, false undelivered {self.false_undelivered}, "
            f"out of order {self.out_of_order}, gaps {self.gaps}, stuck {self.stuck}, "
            f"senders' lines reordered {self.reordered}, "
            f"bad exit statuses {self.bad_exits}"
        )


def reported_undelivered(events: list[Event]) -> set[str]:
    """Texts of lines a sender's client reported as not delivered."""
    return {
        e["text"]
        for e in events
        if e.get("type") == "error" and e.get("key") and e.get("text") is not None
    }


def missing(
    sent: dict[str, list[str]], senders: dict[str, list[Event]], events: list[Event]
) -> int:
    """How many acknowledged lines one receiver has not shown yet (to poll on)."""
    shown = {e.get("text") for e in events if e.get("type") == "message"}
    count = 0
    for nick, lines in sent.items():
        gone = reported_undelivered(senders.get(nick, []))
        count += sum(1 for text in lines if text not in gone and text not in shown)
    return count


def check(
    sent: dict[str, list[str]],
    senders: dict[str, list[Event]],
    receivers: dict[str, list[Event]],
) -> Figures:
    """The figures of one run.

    ``sent``: each sender's nickname and the texts it was given, in order.
    ``senders``: each sender's events (for what it reported undelivered).
    ``receivers``: each receiver's events, in the order printed.
    """
    figures = Figures(receivers=len(receivers))
    acknowledged: dict[str, list[str]] = {}
    undelivered: set[str] = set()
    for nick, lines in sent.items():
        gone = reported_undelivered(senders.get(nick, [])) & set(lines)
        undelivered |= gone
        acknowledged[nick] = [text for text in lines if text not in gone]
        figures.sent += len(lines)
        figures.undelivered += len(gone)
        figures.acknowledged += len(acknowledged[nick])
    for name, events in receivers.items():
        _check_receiver(figures, name, events, acknowledged, undelivered)
    return figures


def _check_receiver(
    figures: Figures,
    name: str,
    events: list[Event],
    acknowledged: dict[str, list[str]],
    undelivered: set[str],
) -> None:
    messages = [e for e in events if e.get("type") == "message"]
    counts = Counter(e["text"] for e in messages)
    lost_here = 0
    for nick, lines in acknowledged.items():
        for text in lines:
            if counts[text] == 0:
                lost_here += 1
            elif counts[text] > 1:
                figures.duplicated += counts[text] - 1
                figures.problems.append(f"{name}: {text!r} shown {counts[text]} times")
        mine = set(lines)
        order = [e["text"] for e in messages if e["text"] in mine]
        if list(dict.fromkeys(order)) != [text for text in lines if counts[text]]:
            figures.reordered += 1
            figures.problems.append(f"{name}: {nick}'s lines not in the order sent")
    if lost_here:
        figures.lost += lost_here
        figures.stuck += 1
        notices = [e for e in events if e.get("type") != "message"][-6:]
        figures.problems.append(
            f"{name}: {lost_here} acknowledged lines never shown; "
            f"{len(messages)} shown, last seq {messages[-1]['seq'] if messages else None}, "
            f"last notices {notices}"
        )
    figures.false_undelivered += sum(1 for text in undelivered if counts[text])
    _check_sequence(figures, name, events)


def _check_sequence(figures: Figures, name: str, events: list[Event]) -> None:
    last: dict[str, int] = {}
    excused: Counter[str] = Counter()
    for event in events:
        kind = event.get("type")
        if kind == "missed" and event.get("reset"):
            last.pop(event["room"], None)  # the room's numbering restarted
        elif kind == "missed":
            excused[event["room"]] += event["count"]
        elif kind == "message" and not event.get("history"):
            room, seq = event["room"], event["seq"]
            if room in last:
                if seq <= last[room]:
                    figures.out_of_order += 1
                    figures.problems.append(f"{name}: {room} seq {seq} after {last[room]}")
                    continue
                hole = seq - last[room] - 1
                if hole > excused[room]:
                    figures.gaps += 1
                    figures.problems.append(f"{name}: {room} jumped {last[room]} -> {seq}")
                excused[room] = max(0, excused[room] - hole)
            last[room] = seq
