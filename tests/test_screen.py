"""The full-screen client's screen model (client/screen.py), with no terminal.

Time is a parameter (the screen's clock), so day changes and dates are
tested at fixed moments; stamps are made from local dates so the tests hold
in any time zone.
"""

from __future__ import annotations

import time

from hypothesis import example, given
from hypothesis import strategies as st
from prompt_toolkit.utils import get_cwidth

from client import events as ev
from client.layout import Entry, layout_entry, stamp
from client.render import plain
from client.screen import Activity, InputHistory, Screen

# Noon, local time, on fixed days.
TODAY = time.mktime((2026, 11, 30, 12, 0, 0, 0, 0, -1))
YESTERDAY = time.mktime((2026, 11, 29, 12, 0, 0, 0, 0, -1))
LAST_YEAR = time.mktime((2025, 3, 1, 9, 5, 0, 0, 0, -1))


def make_screen() -> Screen:
    screen = Screen(me="alice", clock=lambda: TODAY)
    screen.add_event(ev.Welcome(nick="alice", room="lobby", rooms=["lobby"], members=["alice"]), {})
    return screen


def message(
    text: str, nick: str = "bob", room: str = "lobby", ts: float = TODAY, **kw: object
) -> ev.Message:
    return ev.Message(room=room, nick=nick, text=text, ts=ts, id="x", seq=1, **kw)  # type: ignore[arg-type]


def texts(screen: Screen, width: int = 80, height: int = 30) -> list[str]:
    return [plain(row) for row in screen.rows(width, height) if row]


def test_windows_open_switch_step_and_close() -> None:
    screen = make_screen()
    screen.add_event(ev.Joined(room="dev", members=["alice"]), {})
    assert [w.label for w in screen.windows] == ["#lobby", "#dev"]
    assert screen.window.name == "dev", "joining shows the room"
    screen.add_event(ev.Private(nick="bob", to="alice", text="hi", ts=TODAY, id="p"), {})
    assert [w.label for w in screen.windows] == ["#lobby", "#dev", "bob"]
    assert screen.window.name == "dev", "a private line opens a window, not switches"
    screen.step(+1)
    assert screen.window.label == "bob"
    screen.step(+1)
    assert screen.window.label == "#lobby", "wraps around"
    screen.step(-1)
    assert screen.window.label == "bob"
    assert not screen.switch(7)
    screen.add_event(ev.Parted(room="dev"), {})
    assert [w.label for w in screen.windows] == ["#lobby", "bob"]
    assert screen.find("BOB", private=True) is screen.windows[1]


def test_activity_unread_versus_mention_and_cleared_on_view() -> None:
    screen = make_screen()
    screen.add_event(ev.Joined(room="dev", members=["alice"]), {})
    screen.switch(0)
    dev = screen.windows[1]
    screen.add_event(ev.Join(room="dev", nick="bob", ts=TODAY), {})
    assert dev.activity is Activity.NONE, "a join is not a line to read"
    screen.add_event(message("news", room="dev"), {})
    assert dev.activity is Activity.UNREAD
    screen.add_event(message("ALICE: look", room="dev"), {})
    assert dev.activity is Activity.MENTION
    screen.add_event(message("more news", room="dev"), {})
    assert dev.activity is Activity.MENTION, "a mention stays until seen"
    assert "[act: 2!]" in plain(screen.status("connected"))
    screen.add_event(message("alice: here", room="lobby"), {})
    assert screen.windows[0].activity is Activity.NONE, "the window on screen never gets a marker"
    screen.add_event(message("old alice", room="dev", history=True), {})
    screen.switch(1)
    assert dev.activity is Activity.NONE
    screen.switch(0)
    screen.add_event(message("history alice", room="dev", history=True), {})
    assert dev.activity is Activity.NONE, "replayed lines are not news"
    screen.add_event(ev.Private(nick="bob", to="alice", text="psst", ts=TODAY, id="p"), {})
    assert screen.windows[2].activity is Activity.MENTION
    assert "[act: 3!]" in plain(screen.status("connected"))


def test_ignored_nicks_are_hidden_everywhere() -> None:
    screen = make_screen()
    screen.ignored.add("bob")
    screen.add_event(message("hi", nick="Bob"), {})
    screen.add_event(ev.Private(nick="bob", to="alice", text="psst", ts=TODAY, id="p"), {})
    screen.add_event(ev.Join(room="lobby", nick="bob", ts=TODAY), {})
    assert not any("bob" in line.lower() for line in texts(screen))
    assert len(screen.windows) == 1


def test_day_change_rows_and_dates_on_lines_not_from_today() -> None:
    screen = make_screen()
    screen.add_event(message("last year", ts=LAST_YEAR, history=True), {})
    screen.add_event(message("yesterday", ts=YESTERDAY, history=True), {})
    screen.add_event(message("today", ts=TODAY + 60), {})
    lines = texts(screen)
    assert lines[0].strip("- ") == "Day changed to Saturday 01 March 2025"
    assert lines[1].startswith(f"{stamp(LAST_YEAR, TODAY)} <bob> last year")
    assert stamp(LAST_YEAR, TODAY) == "2025-03-01 09:05"
    assert lines[2].strip("- ") == "Day changed to Sunday 29 November 2026"
    assert lines[3] == "11-29 12:00 <bob> yesterday"
    assert lines[4].strip("- ") == "Day changed to Monday 30 November 2026"
    # Our welcome notice (stamped now, today) and the live line below it.
    assert lines[-1] == "12:01 <bob> today"
    assert stamp(TODAY, TODAY) == "12:00"


def test_history_lines_go_in_time_order_dimmed_with_a_live_separator() -> None:
    screen = make_screen()
    screen.add_event(message("live one", ts=TODAY + 10), {})
    # /history fetched older lines after the live one arrived.
    screen.add_event(message("older b", ts=TODAY - 50, history=True), {})
    screen.add_event(message("older a", ts=TODAY - 100, history=True), {})
    lines = texts(screen)
    order = [line for line in lines if "older" in line or "live one" in line]
    assert [line.split("> ")[1] for line in order] == ["older a", "older b", "live one"]
    separator = next(i for i, line in enumerate(lines) if " live " in line and "---" in line)
    assert "older b" in lines[separator - 1]
    rows = screen.rows(80, 30)
    dimmed = [row for row in rows if "older" in plain(row)]
    assert all(style == "fg:ansibrightblack" for row in dimmed for style, _ in row)


def test_wrapped_lines_are_indented_under_the_text() -> None:
    entry = Entry(
        ts=TODAY,
        order=1,
        prefix=(("", "<"), ("", "bob"), ("", "> ")),
        body=(("", "word " * 30 + "end"),),
    )
    rows = [plain(row) for row in layout_entry(entry, 40, TODAY)]
    assert rows[0].startswith("12:00 <bob> word")
    indent = len("12:00 <bob> ")
    for row in rows[1:]:
        assert row.startswith(" " * indent) and row[indent] != " ", row
        assert len(row) <= 40
    assert "".join(r.strip() for r in rows).replace("word", "").replace(" ", "") != ""
    assert rows[-1].rstrip().endswith("end")
    # Words are not cut in two when a space is near.
    assert all(not row.rstrip().endswith("wor") for row in rows)
    # Wide characters count two columns.
    wide = Entry(ts=TODAY, order=2, prefix=(), body=(("", "漢" * 50),))
    assert all(len(plain(row)) * 1 <= 40 for row in layout_entry(wide, 40, TODAY)[1:])


def test_scrolling_is_clamped_and_new_lines_keep_the_view() -> None:
    screen = make_screen()
    for n in range(50):
        screen.add_event(message(f"line {n}", ts=TODAY + n), {})
    screen.page(10, up=True)
    assert screen.window.scroll == 9
    view = [plain(r) for r in screen.rows(80, 10)]
    assert "line 49" not in "\n".join(view) and "line 40" in view[-1]
    screen.add_event(message("line 50", ts=TODAY + 50), {})
    screen.add_event(message("a long line " * 20, ts=TODAY + 51), {})  # four rows at 80
    assert [plain(r) for r in screen.rows(80, 10)] == view, "reading is not disturbed"
    for _ in range(20):
        screen.page(10, up=True)
    top = [plain(r) for r in screen.rows(80, 10)]
    assert top[0].endswith("you are in #lobby; here: nobody else yet")
    assert screen.window.scroll == 56 - 10, "clamped to the top (56 rows in all)"
    for _ in range(20):
        screen.page(10, up=False)
    assert screen.window.scroll == 0


def test_title_status_and_nick_list_are_escaped_and_fit() -> None:
    screen = make_screen()
    assert screen.title({"lobby": "\x1b]0;pwned\x07"}) == r"#lobby: \x1b]0;pwned\x07"
    screen.me = "al\u202eice"
    assert "\\u202e" in plain(screen.status("reconnecting"))
    assert "[reconnecting]" in plain(screen.status("reconnecting"))
    members = ["alice", "bob", "a" * 32] + [f"n{i}" for i in range(40)]
    rows = screen.nick_rows(members, {"bob": "lunch"}, height=21)
    assert len(rows) == 21
    assert plain(rows[0]) == "43 here"
    assert all(len(plain(row)) <= 14 for row in rows)
    assert "-bob" in [plain(r) for r in rows]
    assert plain(rows[-1]).startswith("+") and plain(rows[-1]).endswith("more")


def test_input_history_walks_back_and_returns_the_draft() -> None:
    history = InputHistory()
    for line in ("one", "two", "two", "three"):
        history.add(line)
    assert history.lines == ["one", "two", "three"]
    assert history.older("draft") == "three"
    assert history.older("three") == "two"
    assert history.older("two") == "one"
    assert history.older("one") is None
    assert history.newer() == "two"
    assert history.newer() == "three"
    assert history.newer() == "draft"
    assert history.newer() is None


def test_topic_and_away_events_land_in_their_windows() -> None:
    screen = make_screen()
    screen.add_event(ev.Joined(room="dev", members=["alice", "bob"], topic="\x1b[2J"), {})
    assert any(r"topic: \x1b[2J" in line for line in texts(screen))
    screen.switch(0)
    screen.add_event(ev.Topic(room="dev", text="new", nick="bob", ts=TODAY, changed=True), {})
    assert screen.windows[1].activity is Activity.UNREAD
    rooms = {"lobby": ["alice"], "dev": ["alice", "bob"]}
    screen.add_event(ev.Away(nick="bob", text="\x07lunch"), rooms)
    screen.switch(1)
    assert any(r"bob is away: \x07lunch" in line for line in texts(screen))
    screen.add_event(ev.Away(nick="bob", text="lunch", auto=True), rooms)
    screen.add_event(ev.Away(nick="alice", text="brb"), rooms)
    assert any("you are away: brb" in line for line in texts(screen))


@example(text="hello world", nick="n" * 32, width=20)
@given(
    text=st.text(alphabet=st.sampled_from("ab cd漢\u00e9 -x"), min_size=1, max_size=300),
    nick=st.text(alphabet="abcdefghijklmnop_", min_size=1, max_size=32),
    width=st.integers(20, 200),
)
def test_wrapping_never_overflows_and_keeps_every_character(
    text: str, nick: str, width: int
) -> None:
    entry = Entry(ts=TODAY, order=1, prefix=(("", f"<{nick}> "),), body=(("", text),))
    rows = layout_entry(entry, width, TODAY)
    for row in rows:
        assert sum(get_cwidth(c) for c in plain(row)) <= width, (row, width)
    # Only spaces at the breaks (and the indentation) may differ.
    shown = "".join(plain(row) for row in rows).replace(" ", "")
    assert shown == f"12:00 <{nick}> {text}".replace(" ", "")


def test_who_came_and_went_while_we_were_away_is_marked() -> None:
    screen = make_screen()
    screen.add_event(ev.Join(room="lobby", nick="carol", ts=TODAY, meanwhile=True), {})
    screen.add_event(
        ev.Leave(room="lobby", nick="bob", reason="unknown", ts=TODAY, meanwhile=True), {}
    )
    shown = texts(screen)
    assert shown[-2].endswith("-- carol joined (while we were away)")
    assert shown[-1].endswith("-- bob left (while we were away)")
