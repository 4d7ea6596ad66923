"""client/render.py: what the interactive client shows, without a terminal."""

from __future__ import annotations

import subprocess
import sys
import time
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from client import events as ev
from client.commands import help_event
from client.render import (
    NICK_PALETTE,
    Renderer,
    escape_terminal,
    is_mention,
    nick_style,
    plain,
)

TS = 1_700_000_000.0
HHMM = time.strftime("%H:%M", time.localtime(TS))


def message(text: str, nick: str = "bob", room: str = "lobby", **kw: object) -> ev.Message:
    return ev.Message(room=room, nick=nick, text=text, ts=TS, id="m1", seq=1, **kw)  # type: ignore[arg-type]


def renderer(**kw: object) -> Renderer:
    options: dict[str, object] = {"nick": "alice", "room": "lobby", "clock": lambda: TS}
    options.update(kw)
    return Renderer(**options)  # type: ignore[arg-type]


# --- escaping ------------------------------------------------------------------


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in (
        "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
    )


def test_escape_shows_escape_sequences_visibly() -> None:
    assert escape_terminal("\x1b[2J\x1b]0;owned\x07") == "\\x1b[2J\\x1b]0;owned\\x07"
    assert escape_terminal("a\x9bb\x7fc") == "a\\x9bb\\x7fc"  # C1 CSI and DEL
    assert escape_terminal("tab\there\nnew\rline") == "tab\\x09here\\x0anew\\x0dline"
    assert escape_terminal("\u202eevil") == "\\u202eevil"


def test_escape_keeps_printable_unicode() -> None:
    text = "héllo wörld 日本語 👩‍💻 émoji \\x1b as typed"
    assert escape_terminal(text) == text


@given(st.text())
def test_escaped_text_has_no_control_characters(text: str) -> None:
    escaped = escape_terminal(text)
    assert not any(_unsafe(c) for c in escaped)
    # Nothing printable is lost: without unsafe characters, the text is unchanged.
    if not any(_unsafe(c) for c in text):
        assert escaped == text


@given(st.text(), st.text(min_size=1, max_size=8))
def test_rendered_lines_from_others_have_no_control_characters(text: str, nick: str) -> None:
    for event in (
        message(text, nick=nick),
        message(text, nick=nick, room=nick, action=True),
        ev.Private(nick=nick, to="alice", text=text, ts=TS, id="p"),
        ev.Join(room=nick, nick=nick, ts=TS),
        ev.Leave(room="lobby", nick=nick, reason=text, ts=TS),
        ev.Nick(old=nick, new=text or "x"),
        ev.Error(code="x", message=text, text=text),
    ):
        out = renderer().render(event).text
        assert not any(_unsafe(c) for c in out.replace("\n", "")), (event, out)


# --- colours ---------------------------------------------------------------------


def test_nick_colour_is_stable_and_case_blind() -> None:
    assert nick_style("Alice") == nick_style("alice") == nick_style("ALICE")
    assert nick_style("bob") in NICK_PALETTE
    assert len({nick_style(f"user{i}") for i in range(100)}) > len(NICK_PALETTE) // 2


def test_nick_colour_is_the_same_in_another_process() -> None:
    # hash() is salted per process; the colour must not be.
    code = "from client.render import nick_style; print(nick_style('carol'))"
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert other.stdout.strip() == nick_style("carol")


def test_nick_is_coloured_and_own_lines_differ() -> None:
    r = renderer()
    theirs = r.render(message("hi", nick="bob")).fragments
    assert (nick_style("bob"), "bob") in theirs
    mine = r.render(message("hi", nick="alice")).fragments
    assert all("bold" in style for style, text in mine if text.strip())


def test_no_colour_means_no_styles_and_same_text() -> None:
    event = message("hey alice", nick="bob")
    coloured = renderer().render(event)
    bare = renderer(colour=False).render(event)
    assert all(style == "" for style, _ in bare.fragments)
    assert bare.text == coloured.text
    assert bare.bell


# --- lines ---------------------------------------------------------------------


def test_message_line_layout() -> None:
    assert renderer().render(message("hello")).text == f"{HHMM} <bob> hello"


def test_action_line() -> None:
    assert renderer().render(message("waves", action=True)).text == f"{HHMM} * bob waves"


def test_private_lines_both_ways() -> None:
    r = renderer()
    sent = r.render(ev.Private(nick="alice", to="bob", text="psst", ts=TS, id="p"))
    got = r.render(ev.Private(nick="bob", to="alice", text="pong", ts=TS, id="q"))
    assert sent.text == f"{HHMM} -> bob: psst"
    assert got.text == f"{HHMM} bob -> you: pong"
    assert got.bell and not sent.bell


def test_mentions_are_whole_words_any_case() -> None:
    assert is_mention("hey Alice!", "alice")
    assert is_mention("ALICE: ping", "alice")
    assert not is_mention("malice aforethought", "alice")
    assert not is_mention("alice_b is here", "alice")
    assert is_mention("ping [x]!", "[x]")  # punctuation in nicknames
    assert not is_mention("anything", "")


def test_mention_is_highlighted_and_rings() -> None:
    r = renderer()
    out = r.render(message("alice: look", nick="bob"))
    assert out.bell
    assert ("reverse bold", "alice") in out.fragments
    quiet = r.render(message("no one here", nick="bob"))
    assert not quiet.bell
    own = r.render(message("I am alice", nick="alice"))
    assert not own.bell  # talking about yourself is no mention


def test_history_is_dimmed_and_separated_from_live_lines() -> None:
    r = renderer()
    old = r.render(message("old line", history=True))
    assert old.fragments and all(style == "fg:ansibrightblack" for style, _ in old.fragments)
    assert not r.render(message("alice, from before", history=True)).bell
    live = r.render(message("new line")).text.split("\n")
    assert "live #lobby" in live[0] and live[0].startswith("---")
    assert len(live[0]) < 80
    assert live[1] == f"{HHMM} <bob> new line"
    # one separator only
    assert r.render(message("next")).text == f"{HHMM} <bob> next"


def test_other_rooms_are_prefixed() -> None:
    r = renderer()
    assert r.render(message("hi", room="dev")).text == f"{HHMM} [#dev] <bob> hi"
    assert r.render(ev.Join(room="dev", nick="carol", ts=TS)).text == (
        f"{HHMM} [#dev] -- carol joined #dev"
    )
    r.room = "dev"
    assert r.render(message("hi", room="dev")).text == f"{HHMM} <bob> hi"


def test_join_leave_nick_are_dimmed() -> None:
    r = renderer()
    for event in (
        ev.Join(room="lobby", nick="carol", ts=TS),
        ev.Leave(room="lobby", nick="carol", reason="timeout", ts=TS),
        ev.Nick(old="carol", new="caz"),
        ev.Parted(room="dev"),
    ):
        out = r.render(event)
        assert out.fragments and all(
            style == "fg:ansibrightblack" for style, t in out.fragments if t.strip()
        ), event
    assert (
        "carol left #lobby (timeout)"
        in r.render(ev.Leave(room="lobby", nick="carol", reason="timeout", ts=TS)).text
    )


def test_own_nick_change_updates_the_renderer() -> None:
    r = renderer()
    assert "you are now known as al" in r.render(ev.Nick(old="alice", new="al")).text
    assert r.nick == "al"
    assert r.prompt() == "[al #lobby] "
    assert r.prompt("reconnecting") == "[al #lobby (reconnecting)] "


def test_notices_errors_states() -> None:
    r = renderer()
    texts = {
        "missed": r.render(ev.Missed(room="lobby", count=3)).text,
        "reset": r.render(ev.Missed(room="lobby", count=12, reset=True)).text,
        "error": r.render(ev.Error(code="text_too_long", message="too long", text="x")).text,
        "reconnecting": r.render(ev.Connection(state="reconnecting")).text,
        "reconnected": r.render(ev.Connection(state="reconnected")).text,
        "restarted": r.render(ev.Connection(state="reconnected", restarted=True)).text,
        "moved": r.render(
            ev.Connection(state="reconnected", moved=True, broker="b1", endpoint="tcp://b:5555")
        ).text,
        "moved_unnamed": r.render(ev.Connection(state="reconnected", moved=True, broker="b1")).text,
        "shutdown": r.render(ev.Shutdown(reason="sigterm")).text,
        "who": r.render(ev.Who(room="lobby", members=["bob", "alice"])).text,
        "rooms": r.render(
            ev.Rooms(
                rooms=[ev.RoomCount(room="lobby", members=2), ev.RoomCount(room="a", members=1)]
            )
        ).text,
        "welcome": r.render(
            ev.Welcome(nick="alice", room="lobby", rooms=["lobby"], members=["alice", "bob"])
        ).text,
    }
    assert "3 lines are missing in #lobby" in texts["missed"]
    assert "too long [text_too_long]" in texts["error"] and "not sent: x" in texts["error"]
    assert "reconnecting" in texts["reconnecting"]
    assert texts["reconnected"].endswith("-- reconnected")
    assert texts["restarted"].endswith("-- reconnected (the broker restarted)")
    assert texts["moved"].endswith("-- moved to broker tcp://b:5555; nothing lost")
    assert texts["moved_unnamed"].endswith("-- moved to broker b1; nothing lost")
    assert "#lobby starts afresh" in texts["reset"] and "12 unseen lines gone" in texts["reset"]
    assert "shutting down (sigterm)" in texts["shutdown"]
    assert texts["who"].endswith("#lobby (2): alice, bob")
    assert texts["rooms"].endswith("rooms: #a (1), #lobby (2)")
    assert "you are alice in #lobby; here: bob" in texts["welcome"]
    assert all(line.startswith(HHMM) for line in texts.values())
    assert all(len(line) < 80 for line in texts.values())


def test_help_lists_every_command_within_80_columns() -> None:
    out = renderer().render(help_event()).text.split("\n")
    for name in ("join", "part", "rooms", "who", "msg", "me", "nick", "help", "exit", "quit"):
        assert any(line.strip().startswith(f"/{name}") for line in out), name
    assert all(len(line) < 80 for line in out)


def test_plain_joins_fragments() -> None:
    assert plain([("bold", "a"), ("", "b")]) == "ab"


def test_the_end_of_a_history_fetch_says_what_came() -> None:
    r = renderer()
    assert "no older lines in #lobby" in r.render(ev.HistoryEnd(room="lobby", count=0)).text
    assert "3 older lines of #lobby above" in r.render(ev.HistoryEnd(room="lobby", count=3)).text
    assert "1 older line of #lobby above" in r.render(ev.HistoryEnd(room="lobby", count=1)).text


def test_topics_and_away_in_line_mode_are_escaped() -> None:
    render = renderer(colour=False)
    changed = ev.Topic(room="lobby", text="\x1b[2Jplans", nick="bob", ts=TS, changed=True)
    assert render.render(changed).text.endswith(r"-- bob set the topic of #lobby: \x1b[2Jplans")
    asked = ev.Topic(room="lobby", text="plans", nick="bob", ts=TS)
    assert render.render(asked).text.endswith(f"-- topic of #lobby: plans (set by bob {HHMM})")
    assert render.render(ev.Topic(room="lobby", text="")).text.endswith("#lobby has no topic")
    away = ev.Away(nick="bob", text="\x07gone", auto=True)
    assert render.render(away).text.endswith(r"-- bob is away: \x07gone")
    assert render.render(ev.Away(nick="alice", text="")).text.endswith("-- you are back")
    who = ev.Who(room="lobby", members=["bob", "alice"], away={"bob": "\x1b[31m"})
    assert render.render(who).text.endswith(r"#lobby (2): alice, bob (away: \x1b[31m)")


def test_the_topic_is_shown_on_joining_in_line_mode() -> None:
    render = renderer(colour=False)
    welcome = ev.Welcome(
        nick="alice", room="lobby", rooms=["lobby"], members=["alice"], topic="\x1b[2Jplans"
    )
    lines = render.render(welcome).text.split("\n")
    assert lines[1] == rf"{HHMM} -- topic of #lobby: \x1b[2Jplans"
    joined = render.render(ev.Joined(room="dev", members=["alice"], topic="ops"))
    assert joined.text.endswith("-- topic of #dev: ops")
    assert "\n" not in render.render(ev.Joined(room="x", members=["alice"])).text


def test_a_key_refused_while_reconnecting_names_the_broker_plainly() -> None:
    text = (
        renderer()
        .render(
            ev.Connection(
                state="auth_failed", endpoint="tcp://b:5555\x1b[2J", message="dropped the handshake"
            )
        )
        .text
    )
    assert text.endswith(
        "-- the broker at tcp://b:5555\\x1b[2J refused our key (authentication failed);"
        " trying the other brokers..."
    )
