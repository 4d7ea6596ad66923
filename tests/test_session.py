"""The session core under staged faults (issue 12): time and message order are
parameters, no sockets. Each test names the fault it exists for."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client import events as ev
from client.session import ClientSession, State
from protocol import (
    Ack,
    Away,
    AwayReply,
    ChatMessage,
    Error,
    Hello,
    History,
    HistoryReply,
    Joined,
    Pong,
    Reply,
    Request,
    Say,
    Shutdown,
    Topic,
    TopicNotice,
    TopicReply,
    Who,
    WhoReply,
)
from tests.conftest import joined_session, welcome


def _line(seq: int, room: str = "lobby") -> ChatMessage:
    return ChatMessage(room=room, nick="bob", text=f"line {seq}", ts=1.0, id=f"i{seq}", seq=seq)


def _serve(request: History, store: dict[int, ChatMessage], newest: int) -> HistoryReply:
    """A broker's history answer: the lines of the range, oldest first with
    ``forward`` (contract §2), else the newest ``limit``."""
    seqs = [s for s in sorted(store) if request.after < s < (request.before or newest + 1)]
    seqs = seqs[: request.limit] if request.forward else seqs[-request.limit :]
    return HistoryReply(room=request.room, messages=[store[s] for s in seqs], seq=newest)


def _requests(session: ClientSession, kind: type[Request]) -> list[Request]:
    return [r for r in session.take_output().requests if isinstance(r, kind)]


def _seqs(events: list[ev.Event]) -> list[int]:
    return [e.seq for e in events if isinstance(e, ev.Message)]


def _until_failed(session: ClientSession, what: str) -> list[ev.Event]:
    """Time passes, the broker alive (pongs) but never answering ``what``:
    the errors that fail it, once they come."""
    failed: list[ev.Event] = []
    now = 0.0
    while not failed:
        now += 1.0
        assert now < 120, f"the {what} was never answered nor failed"
        session.on_reply(Pong(broker="b", seqs={}), now)
        failed += [e for e in session.tick(now) if isinstance(e, ev.Error)]
    return failed


def _restart(session: ClientSession, now: float, *, broker: str = "b2") -> list[ev.Event]:
    """The broker restarted: a pong from a new broker, then our hello goes out."""
    events = session.on_reply(Pong(broker=broker, seqs={}), now)
    events += session.tick(now)
    assert _requests(session, Hello)
    return events


# --- 1. a rejoin holds the room's broadcasts until its joined ----------------------


@pytest.mark.parametrize("before_joined", [1, 2, 3])
def test_broadcasts_overtaking_the_rejoin_are_delivered_once_in_order(before_joined: int) -> None:
    # The broker restarted with its history on disk; lines 4..6 are published
    # as we rejoin, and `before_joined` of them overtake our `joined` (seq 3).
    session = joined_session()
    store = {s: _line(s) for s in range(1, 7)}
    delivered = _seqs([e for s in (1, 2, 3) for e in session.on_broadcast(store[s], 1.0)])
    _restart(session, 2.0)
    delivered += _seqs(session.on_reply(welcome(broker="b2"), 2.1))
    for seq in range(4, 4 + before_joined):
        delivered += _seqs(session.on_broadcast(store[seq], 2.2))
    delivered += _seqs(session.on_reply(Joined(room="lobby", seq=3, members=["me"]), 2.3))
    for seq in range(4 + before_joined, 7):
        delivered += _seqs(session.on_broadcast(store[seq], 2.4))
    delivered += _seqs(session.on_reply(Pong(broker="b2", seqs={"lobby": 6}), 3.0))
    for request in _requests(session, History):
        assert isinstance(request, History)
        delivered += _seqs(session.on_reply(_serve(request, store, 6), 3.1))
    assert delivered == [1, 2, 3, 4, 5, 6]


def test_a_lower_joined_seq_of_the_same_epoch_is_reordering_not_a_reset() -> None:
    session = joined_session(epoch="e1")
    for seq in (1, 2, 3):
        session.on_broadcast(_line(seq), 1.0)
    _restart(session, 2.0)
    session.on_reply(welcome(broker="b2"), 2.1)
    events = session.on_reply(Joined(room="lobby", seq=2, members=["me"], epoch="e1"), 2.2)
    assert not [e for e in events if isinstance(e, ev.Missed)]
    assert session.on_broadcast(_line(3), 2.3) == []  # seen: no duplicate
    assert _seqs(session.on_broadcast(_line(4), 2.4)) == [4]


def test_a_new_epoch_restarts_the_numbering_and_says_so() -> None:
    # The broker lost its history (a new store): its numbering restarted, even
    # though it has by now more lines than we saw.
    session = joined_session(epoch="e1")
    for seq in (1, 2, 3):
        session.on_broadcast(_line(seq), 1.0)
    session.on_broadcast(_line(5), 1.0)  # held: 4 is being repaired
    _restart(session, 2.0)
    session.on_reply(welcome(broker="b2"), 2.1)
    events = session.on_reply(Joined(room="lobby", seq=7, members=["me"], epoch="e2"), 2.2)
    assert ev.Missed(room="lobby", count=2, reset=True) in events
    assert _seqs(events) == []  # nothing of the old numbering re-delivered
    assert _seqs(session.on_broadcast(_line(8), 2.3)) == [8]  # new lines are not duplicates
    assert not _requests(session, History)  # no repair of the old numbering


def test_a_first_epoch_is_adopted_without_a_reset() -> None:
    session = joined_session()  # an old broker: no epoch
    session.on_broadcast(_line(1), 1.0)
    events = session.on_reply(Pong(broker="b", seqs={"lobby": 1}, epochs={"lobby": "e1"}), 1.1)
    assert not [e for e in events if isinstance(e, ev.Missed)]
    events = session.on_reply(Pong(broker="b", seqs={"lobby": 1}, epochs={"lobby": "e2"}), 1.2)
    assert ev.Missed(room="lobby", count=0, reset=True) in events


# --- 2. repair always ends ------------------------------------------------------------


@pytest.mark.parametrize("answer_lost", ["dropped", "reconnected"])
def test_a_room_never_stops_delivering_when_a_repair_answer_is_lost(answer_lost: str) -> None:
    session = joined_session()
    delivered = _seqs(session.on_broadcast(_line(1), 1.0))
    session.on_broadcast(_line(3), 1.0)  # 2 is missing: a repair goes out
    assert _requests(session, History)
    delivered += _seqs(session.on_broadcast(_line(2), 1.1))  # ... and 2 comes live
    if answer_lost == "reconnected":
        session.tick(100.0)
        session.tick(100.0)
        session.on_reply(welcome(), 100.1)
        session.on_reply(Joined(room="lobby", seq=3, members=["me"]), 100.2)
    for now in (5.0, 10.0, 20.0):
        session.tick(now)  # the repair's answer never comes
    for seq in range(4, 8):
        delivered += _seqs(session.on_broadcast(_line(seq), 30.0))
    assert delivered == [1, 2, 3, 4, 5, 6, 7]


def test_a_repair_never_answered_is_retried_then_reported_missed() -> None:
    session = joined_session()
    session.on_broadcast(_line(1), 1.0)
    assert session.on_broadcast(_line(4), 1.0) == []
    asked = _requests(session, History)
    now = 1.0
    events: list[ev.Event] = []
    while not [e for e in events if isinstance(e, ev.Message)]:
        now += 0.5
        assert now < 60, "the held line was never delivered"
        events += session.on_reply(Pong(broker="b", seqs={"lobby": 4}), now)
        events += session.tick(now)
        asked += _requests(session, History)
    assert len(asked) == 3  # asked, then twice again
    assert ev.Missed(room="lobby", count=2) in events
    assert _seqs(events) == [4]


def test_repair_pages_forward_in_chunks_that_skip_nothing_on_an_old_broker() -> None:
    # An old broker ignores `forward` and returns the newest `limit` lines of
    # the range: chunks no wider than the limit make that the same lines.
    session = joined_session()
    store = {s: _line(s) for s in range(1, 1202)}
    session.on_broadcast(store[1], 1.0)
    delivered = _seqs(session.on_broadcast(store[1201], 1.0))
    for _ in range(10):
        for request in _requests(session, History):
            assert isinstance(request, History)
            assert request.forward
            assert request.before is not None and request.before - request.after - 1 <= 500
            old = History(room=request.room, after=request.after, before=request.before, limit=500)
            delivered += _seqs(session.on_reply(_serve(old, store, 1201), 2.0))
    assert delivered == list(range(2, 1202))


# --- 3. resends with the same key -----------------------------------------------------


def test_an_unacknowledged_line_is_resent_with_its_key_until_acknowledged() -> None:
    # The request vanished (a full socket queue, a paused broker): no error,
    # no reconnect; the timer sends it again.
    session = joined_session()
    key = session.say("hello")
    assert [r.key for r in _requests(session, Say) if isinstance(r, Say)] == [key]
    now, resent = 0.0, []
    while len(resent) < 2:
        now += 0.25
        session.on_reply(Pong(broker="b", seqs={}), now)  # the broker is alive
        session.tick(now)
        resent += [r.key for r in _requests(session, Say) if isinstance(r, Say)]
        assert now < 30, "never resent"
    assert resent == [key, key]
    session.on_reply(Ack(key=key, id="x", room="lobby", seq=1), now)
    assert not session.busy
    session.tick(now + 60)
    assert not _requests(session, Say)


def test_a_line_the_socket_refused_is_sent_again_soon() -> None:
    session = joined_session()
    key = session.say("hello")
    (line,) = _requests(session, Say)
    session.not_sent([line], 0.0)
    session.tick(0.1)
    assert [r.key for r in _requests(session, Say) if isinstance(r, Say)] == [key]


def test_lines_the_socket_refused_are_not_overtaken_by_later_ones() -> None:
    session = joined_session()
    first, second = session.say("a"), session.say("b")
    session.not_sent(_requests(session, Say), 0.0)  # the queue was full for both
    third = session.say("c")
    assert [r.key for r in _requests(session, Say) if isinstance(r, Say)] == [first, second, third]


def test_unavailable_is_retried_later_with_the_same_key_not_reported() -> None:
    session = joined_session()
    key = session.say("hello")
    _requests(session, Say)
    refused = Error(code="unavailable", message="disk full", req="say", key=key, room="lobby")
    assert session.on_reply(refused, 0.1) == []
    session.tick(0.2)
    assert not _requests(session, Say)  # not at once: the store needs a moment
    session.on_reply(Pong(broker="b", seqs={}), 1.5)
    session.tick(1.5)
    assert [r.key for r in _requests(session, Say) if isinstance(r, Say)] == [key]


def test_a_line_refused_as_syncing_is_sent_again_shortly() -> None:
    session = joined_session()
    session.join("ops")
    session.on_reply(Joined(room="ops", seq=0, members=["me"]), 0.1)
    key = session.say("hi", "ops")
    _requests(session, Say)
    refused = Error(code="syncing", message="wait", req="say", key=key, room="ops")
    assert session.on_reply(refused, 0.2) == []
    session.tick(0.3)
    assert not _requests(session, Say)
    session.tick(0.8)
    assert [r.key for r in _requests(session, Say) if isinstance(r, Say)] == [key]


def test_a_request_refused_as_syncing_is_sent_again_shortly() -> None:
    session = joined_session()
    session.who()
    (who,) = _requests(session, Who)
    assert (
        session.on_reply(Error(code="syncing", message="wait", req="who", room="lobby"), 0.1) == []
    )
    session.tick(0.8)
    assert _requests(session, Who) == [who]


def test_a_request_the_socket_refused_is_sent_again_soon() -> None:
    session = joined_session()
    session.who()
    (who,) = _requests(session, Who)
    session.not_sent([who], 0.0)
    session.tick(0.5)
    assert _requests(session, Who) == [who]


# --- a rejoin refused as nick_taken waits for the old session to time out --------------


def _refused_rejoins(session: ClientSession, start: float, until: float) -> list[ev.Event]:
    """Tick from ``start`` to ``until``; the broker refuses every hello as ``nick_taken``."""
    events: list[ev.Event] = []
    now = start
    while now < until and session.state is State.RECONNECTING:
        events += session.tick(now)
        for _ in _requests(session, Hello):
            refusal = Error(code="nick_taken", message="taken", req="hello")
            events += session.on_reply(refusal, now + 0.01)
        now += 0.05
    return events


def test_a_rejoin_refused_as_nick_taken_keeps_trying_until_the_old_session_expired() -> None:
    # Found by the chaos suite over a cut link: the first refusal closed the
    # session and reported every unacknowledged line not_delivered.
    session = joined_session()  # the welcome's timeout is 5 s, heartbeat 1 s
    key = session.say("typed while the link was cut")
    session.take_output()
    session.tick(100.0)  # silence: the broker is gone
    assert session.state is State.RECONNECTING
    events = _refused_rejoins(session, 100.0, 104.0)
    assert session.state is State.RECONNECTING  # still trying, not given up
    waits = [e for e in events if isinstance(e, ev.Connection)]
    assert [w.state for w in waits] == ["waiting_for_nick"]  # told once
    assert 5.0 <= waits[0].wait <= 9.0
    assert not [e for e in events if isinstance(e, ev.Error)]
    # The old session timed out: the next try is welcomed, the line goes again.
    now = 104.0
    while not _requests(session, Hello):
        now += 0.05
        session.tick(now)
    session.on_reply(welcome(), now)
    events = session.on_reply(Joined(room="lobby", seq=0, members=["me"]), now)
    assert [e.state for e in events if isinstance(e, ev.Connection)] == ["reconnected"]
    assert [r.key for r in _requests(session, Say) if isinstance(r, Say)] == [key]


def test_a_nickname_still_taken_after_the_old_session_must_have_expired_gives_up() -> None:
    session = joined_session()
    session.say("hello")
    session.tick(100.0)
    # Not before the broker's timeout (5 s) plus three heartbeats from the reset.
    events = _refused_rejoins(session, 100.0, 107.9)
    assert session.state is State.RECONNECTING
    events += _refused_rejoins(session, 107.9, 130.0)
    assert session.state is State.CLOSED and session.close_reason == "nick_taken"
    errors = [e for e in events if isinstance(e, ev.Error)]
    assert [e.code for e in errors] == ["nick_taken"]
    assert session.undelivered("closed")  # the front-end reports the line


def test_a_first_hello_refused_as_nick_taken_is_refused_at_once() -> None:
    session = ClientSession("me", ["lobby"])
    session.hello(0.0)
    events = session.on_reply(Error(code="nick_taken", message="taken", req="hello"), 0.1)
    assert [e.code for e in events if isinstance(e, ev.Error)] == ["nick_taken"]
    assert session.state is State.IDLE


# --- 4. every request answered or failed ----------------------------------------------


def test_a_who_sent_just_before_the_broker_died_is_resent_after_the_rejoin() -> None:
    session = joined_session()
    session.who()
    assert _requests(session, Who)
    session.tick(100.0)  # silence: the broker is gone
    assert session.state is State.RECONNECTING
    session.tick(100.0)
    session.on_reply(welcome(broker="b2"), 100.1)
    assert not _requests(session, Who)  # not before we are back
    events = session.on_reply(Joined(room="lobby", seq=0, members=["me"]), 100.2)
    assert [e.state for e in events if isinstance(e, ev.Connection)] == ["reconnected"]
    assert _requests(session, Who) == [Who(room="lobby")]
    events = session.on_reply(WhoReply(room="lobby", members=["me", "bob"]), 100.3)
    assert events == [ev.Who(room="lobby", members=["me", "bob"])]
    assert not session.busy


def test_a_request_never_answered_fails_with_an_error() -> None:
    session = joined_session()
    session.who()
    session.take_output()
    failed = _until_failed(session, "who")
    assert failed == [
        ev.Error(code="no_answer", message=failed[0].message, req="who", room="lobby")
    ]


def test_requests_pending_when_the_session_ends_are_reported() -> None:
    session = joined_session()
    session.who()
    session.say("hello")
    events = session.undelivered("closed")
    assert {(e.code, e.req) for e in events if isinstance(e, ev.Error)} == {
        ("not_delivered", "who"),
        ("not_delivered", "say"),
    }


@pytest.mark.parametrize(
    ("operation", "request_", "answer", "event"),
    [
        (
            lambda s: s.topic(),
            Topic(room="lobby"),
            TopicReply(room="lobby", text="ship it", nick="bob", ts=1.0),
            ev.Topic(room="lobby", text="ship it", nick="bob", ts=1.0),
        ),
        (
            lambda s: s.away("lunch"),
            Away(text="lunch"),
            AwayReply(nick="me", text="lunch"),
            ev.Away(nick="me", text="lunch"),
        ),
    ],
)
def test_topic_and_away_sent_before_the_broker_died_are_resent_and_answered(
    operation: Callable[[ClientSession], None],
    request_: Request,
    answer: Reply,
    event: ev.Event,
) -> None:
    session = joined_session()
    operation(session)
    asked = session.last_request
    assert asked is not None
    assert _requests(session, type(request_)) == [request_]
    session.tick(100.0)  # silence: the broker is gone
    assert session.state is State.RECONNECTING and session.busy
    session.tick(100.0)
    session.on_reply(welcome(broker="b2"), 100.1)
    session.on_reply(Joined(room="lobby", seq=0, members=["me"]), 100.2)
    assert _requests(session, type(request_)) == [request_]  # once, not twice
    assert session.on_reply(answer, 100.3) == [event]
    assert session.take_completions() == [(asked, event)]
    assert not session.busy


def test_setting_the_topic_is_answered_by_our_own_broadcast() -> None:
    session = joined_session()
    session.topic()  # asking...
    ask = session.last_request
    session.topic("release friday")  # ...then setting: answered on another socket
    setting = session.last_request
    session.take_output()
    changed = TopicNotice(room="lobby", text="release friday", nick="me", ts=2.0)
    someone = TopicNotice(room="lobby", text="no", nick="bob", ts=1.0)
    session.on_broadcast(someone, 0.1)  # not ours: answers nothing
    assert session.take_completions() == []
    (notice,) = session.on_broadcast(changed, 0.2)
    reply = TopicReply(room="lobby", text="release friday", nick="me", ts=2.0)
    (asked,) = session.on_reply(reply, 0.3)
    assert session.take_completions() == [(setting, notice), (ask, asked)]
    assert not session.busy


@pytest.mark.parametrize("req", ["topic", "away"])
def test_a_refused_topic_or_away_completes_with_the_error(req: str) -> None:
    session = joined_session()
    session.topic("x" * 10) if req == "topic" else session.away("x")
    asked = session.last_request
    refusal = Error(code="rate_limited", message="slow down", req=req, room=None)
    (event,) = session.on_reply(refusal, 0.1)
    assert session.take_completions() == [(asked, event)]
    assert not session.busy


def test_an_unanswered_away_fails_with_an_error() -> None:
    session = joined_session()
    session.away("lunch")
    session.take_output()
    failed = _until_failed(session, "away")
    assert [(e.code, e.req) for e in failed if isinstance(e, ev.Error)] == [("no_answer", "away")]


# --- 7. pacing to the broker's own bucket ---------------------------------------------


@pytest.mark.parametrize(("rate", "burst"), [(5.0, 10), (2.0, 1), (10.0, 3)])
def test_a_sender_at_exactly_the_documented_rate_never_queues(rate: float, burst: int) -> None:
    session = joined_session(rate=rate, burst=burst)
    now = 0.0
    for n in range(int(rate * 60)):  # a minute at the rate
        now = n / rate
        session.tick(now)
        key = session.say(f"line {n}")
        assert len(_requests(session, Say)) == 1, f"line {n} queued at {now:.2f} s"
        session.on_reply(Pong(broker="b", seqs={}), now)
        session.on_reply(Ack(key=key, id="x"), now)
    assert session.queued == 0


def test_pacing_counts_from_the_moment_of_the_line_not_the_last_tick() -> None:
    # The front-end ticks ten times a second; lines come in between.
    session = joined_session(rate=5.0, burst=1)
    session.say("first")
    session.tick(0.1)
    session.take_output()
    session.advance(0.2)
    session.say("second")
    assert len(_requests(session, Say)) == 1


def test_a_burst_within_the_limit_goes_at_once_and_more_waits_its_turn() -> None:
    session = joined_session(rate=5.0, burst=10)
    for n in range(10):
        session.say(f"line {n}")
    assert len(_requests(session, Say)) == 10
    session.say("one more")
    assert not _requests(session, Say)
    session.tick(0.1)
    assert not _requests(session, Say)
    session.tick(0.2)
    assert len(_requests(session, Say)) == 1


# --- 9. reconnecting promptly after a shutdown ----------------------------------------


def test_after_a_shutdown_hello_is_retried_promptly_with_backoff() -> None:
    session = joined_session()
    session.on_reply(Shutdown(reason="the broker is shutting down"), 0.0)
    sent: list[float] = []
    now = 0.0
    while len(sent) < 3:
        session.tick(now)
        if _requests(session, Hello):
            sent.append(now)
        now = round(now + 0.01, 2)
        assert now < 10
    assert 0.05 <= sent[0] <= 0.3  # soon, not at once into the dying broker
    assert sent[1] - sent[0] <= 0.5  # not three heartbeats later
    assert sent[2] - sent[1] > sent[1] - sent[0]  # backing off


def test_reconnect_times_are_jittered() -> None:
    times = []
    for jitter in (0.0, 0.99):
        session = joined_session()
        session.link.retry.jitter = lambda jitter=jitter: jitter  # type: ignore[misc]
        session.on_reply(Shutdown(reason="bye"), 0.0)
        now = 0.0
        while not _requests(session, Hello):
            now = round(now + 0.01, 2)
            session.tick(now)
        times.append(now)
    assert times[1] > 2 * times[0]


def test_a_retried_hello_answered_twice_is_no_error() -> None:
    session = joined_session()
    session.on_reply(Shutdown(reason="bye"), 0.0)
    for now in (0.2, 0.5, 1.0):
        session.tick(now)
    assert session.on_reply(welcome(broker="b2", session="new"), 1.1) == []
    refused = Error(code="already_joined", message="again", req="hello")
    assert session.on_reply(refused, 1.2) == []
    events = session.on_reply(Joined(room="lobby", seq=0, members=["me"]), 1.3)
    assert events == [ev.Connection(state="reconnected", restarted=True, broker="b2")]
    assert session.state is State.JOINED


def test_a_pong_ahead_of_the_sub_repairs_only_if_the_lines_never_come() -> None:
    # The pong overtook lines 2 and 3 still on their way on the SUB.
    session = joined_session()
    session.on_broadcast(_line(1), 1.0)
    session.on_reply(Pong(broker="b", seqs={"lobby": 3}), 1.1)
    assert not _requests(session, History)
    assert _seqs(session.on_broadcast(_line(2), 1.2) + session.on_broadcast(_line(3), 1.2)) == [
        2,
        3,
    ]
    # Line 4 is published and lost: the next pong names it, the one after repairs.
    session.on_reply(Pong(broker="b", seqs={"lobby": 4}), 2.1)
    assert not _requests(session, History)
    session.on_reply(Pong(broker="b", seqs={"lobby": 4}), 3.1)
    assert _requests(session, History) == [
        History(room="lobby", after=3, before=5, limit=500, forward=True)
    ]


@st.composite
def _restarts(draw: st.DrawFn) -> tuple[int, int, int, list[tuple[str, int]]]:
    """Lines 1..count; the broker restarts after `seen` of them were
    published, and its `joined` comes when `at_join` exist. The SUB brings
    lines in order, some dropped; those published after the joined may
    overtake it (issue 12, item 1)."""
    count = draw(st.integers(1, 30))
    seen = draw(st.integers(0, count))
    at_join = draw(st.integers(seen, count))
    before = [("live", s) for s in range(1, seen + 1) if draw(st.booleans()) or s == seen]
    after = [("live", s) for s in range(seen + 1, count + 1) if draw(st.integers(0, 3))]
    # The joined goes after every received line it counts, anywhere later.
    first_free = next((i for i, (_, s) in enumerate(after) if s > at_join), len(after))
    position = draw(st.integers(first_free, len(after)))
    steps = [*before, ("restart", 0), *after[:position], ("joined", at_join), *after[position:]]
    for _ in range(draw(st.integers(0, 6))):
        where = draw(st.integers(steps.index(("joined", at_join)) + 1, len(steps)))
        steps.insert(where, (draw(st.sampled_from(["serve", "pong"])), 0))
    return count, seen, at_join, steps


@settings(max_examples=300, deadline=None)
@given(_restarts())
def test_any_order_around_a_rejoin_yields_each_line_once_in_order(
    case: tuple[int, int, int, list[tuple[str, int]]],
) -> None:
    count, _, _, steps = case
    store = {s: _line(s) for s in range(1, count + 1)}
    session = joined_session(epoch="e1")
    delivered: list[int] = []
    asked: list[History] = []

    def take(events: list[ev.Event]) -> None:
        delivered.extend(_seqs(events))
        assert not [e for e in events if isinstance(e, ev.Missed)]
        asked.extend(r for r in session.take_output().requests if isinstance(r, History))

    for kind, seq in steps:
        if kind == "live":
            take(session.on_broadcast(store[seq], 1.0))
        elif kind == "restart":
            take(_restart(session, 2.0))
            asked.clear()  # the old broker never answers
            take(session.on_reply(welcome(broker="b2"), 2.0))
        elif kind == "joined":
            take(session.on_reply(Joined(room="lobby", seq=seq, members=["me"], epoch="e1"), 2.0))
        elif kind == "serve" and asked:
            take(session.on_reply(_serve(asked.pop(0), store, count), 2.0))
        elif kind == "pong":
            take(session.on_reply(Pong(broker="b2", seqs={"lobby": count}), 2.0))
    for now in (3.0, 4.0):
        take(session.on_reply(Pong(broker="b2", seqs={"lobby": count}), now))
    while asked:
        take(session.on_reply(_serve(asked.pop(0), store, count), 5.0))
    assert delivered == list(range(1, count + 1))


def test_only_the_first_try_makes_new_sockets() -> None:
    # A hello the broker got and answered late must not be left on a socket
    # we closed, holding our nickname: later tries reuse the connection.
    session = joined_session()
    session.tick(100.0)  # silence
    resets = []
    for now in (100.0, 100.5, 101.5, 103.5, 107.5):
        session.tick(now)
        out = session.take_output()
        if any(isinstance(r, Hello) for r in out.requests):
            resets.append(out.reset)
    assert resets[0] and not any(resets[1:]) and len(resets) >= 3
