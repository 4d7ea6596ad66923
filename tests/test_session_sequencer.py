"""client/sequencer.py: one room's numbering and its repair state machine."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from client import events as ev
from client.sequencer import REPAIR_TRIES, RepairState, RoomTrack
from protocol import ChatMessage, History, HistoryReply

TIMEOUT = 3.0


def _line(seq: int) -> ChatMessage:
    return ChatMessage(room="r", nick="bob", text=f"line {seq}", ts=1.0, id=f"i{seq}", seq=seq)


def _answer(request: History, store: dict[int, ChatMessage], newest: int) -> HistoryReply:
    seqs = [s for s in sorted(store) if request.after < s < (request.before or newest + 1)]
    seqs = seqs[: request.limit] if request.forward else seqs[-request.limit :]
    return HistoryReply(room="r", messages=[store[s] for s in seqs], seq=newest)


def test_in_order_lines_pass_and_a_gap_asks_for_its_range_forward() -> None:
    track = RoomTrack(room="r", last=0)
    assert [e.seq for e in track.line(_line(1)) if isinstance(e, ev.Message)] == [1]
    assert track.line(_line(4)) == []
    events, request = track.poll(0.0, TIMEOUT)
    assert events == []
    assert request == History(room="r", after=1, before=4, limit=500, forward=True)
    assert track.repair is RepairState.ASKING
    assert track.poll(1.0, TIMEOUT) == ([], None)  # one repair at a time


def test_the_answer_fills_the_gap_then_the_held_line_follows() -> None:
    track = RoomTrack(room="r", last=1)
    track.line(_line(4))
    _, request = track.poll(0.0, TIMEOUT)
    assert request is not None
    store = {s: _line(s) for s in range(1, 5)}
    events = track.history(_answer(request, store, 4), request)
    assert [e.seq for e in events if isinstance(e, ev.Message)] == [2, 3, 4]
    assert track.repair is RepairState.IDLE and not track.stuck()


def test_a_short_answer_reports_what_is_gone_and_never_asks_again() -> None:
    track = RoomTrack(room="r", last=1)
    track.line(_line(5))
    _, request = track.poll(0.0, TIMEOUT)
    assert request is not None
    events = track.history(HistoryReply(room="r", messages=[_line(2)], seq=5), request)
    assert ev.Missed(room="r", count=2) in events
    assert [e.seq for e in events if isinstance(e, ev.Message)] == [2, 5]
    assert track.poll(1.0, TIMEOUT) == ([], None)


def test_a_late_answer_to_another_range_only_delivers_its_lines() -> None:
    track = RoomTrack(room="r", last=1)
    track.line(_line(3))
    _, first = track.poll(0.0, TIMEOUT)
    assert first is not None
    track.line(_line(2))  # the gap closed live; 3 follows
    track.line(_line(9))
    _, second = track.poll(0.1, TIMEOUT)
    assert second is not None and second.after == 3
    store = {s: _line(s) for s in range(1, 10)}
    # The first request's answer, late: it must not close the second range.
    track.history(_answer(first, store, 9), first)
    assert track.repair is RepairState.ASKING and track.last == 3


def test_an_answer_that_cannot_be_for_the_range_skips_nothing() -> None:
    # A reply lost on the way shifts the order of answers: this one holds a
    # line below the range, so it is not the answer, whatever it is matched to.
    track = RoomTrack(room="r", last=2)
    track.line(_line(5))
    _, request = track.poll(0.0, TIMEOUT)
    assert request is not None and request.after == 2
    events = track.history(HistoryReply(room="r", messages=[_line(1)], seq=5), request)
    assert events == [] and track.last == 2 and track.repair is RepairState.ASKING
    events = track.history(HistoryReply(room="r", messages=[], seq=5), request)
    assert events == [] and track.last == 2  # an empty answer says nothing either


def test_a_repair_never_answered_is_asked_again_then_reported() -> None:
    track = RoomTrack(room="r", last=1)
    track.line(_line(4))
    asked = 0
    events: list[ev.Event] = []
    now = 0.0
    while track.buffered:
        events_now, request = track.poll(now, TIMEOUT)
        events += events_now
        asked += request is not None
        now += 1.0
    assert asked == REPAIR_TRIES
    assert events[0] == ev.Missed(room="r", count=2)
    assert [e.seq for e in events if isinstance(e, ev.Message)] == [4]


def test_a_lost_connection_leaves_the_repair_to_be_asked_again() -> None:
    track = RoomTrack(room="r", last=1)
    track.line(_line(3))
    track.poll(0.0, TIMEOUT)
    track.lost()
    assert track.stuck()  # until polled again (the session does, once rejoined)
    _, request = track.poll(1.0, TIMEOUT)
    assert request is not None and not track.stuck()


def test_renumbering_drops_what_is_held_and_counts_what_was_never_seen() -> None:
    track = RoomTrack(room="r", last=3, known=3, epoch="e1")
    track.line(_line(6))
    events = track.renumbered(2, "e2", 2)
    assert events == [ev.Missed(room="r", count=3, reset=True)]
    assert (track.last, track.epoch, track.buffered) == (2, "e2", {})
    assert [e.seq for e in track.line(_line(3)) if isinstance(e, ev.Message)] == [3]


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(1, 40),
    order=st.randoms(use_true_random=False),
    drop_live=st.floats(0, 0.9),
    drop_answers=st.floats(0, 0.9),
)
def test_under_any_losses_every_line_is_delivered_once_in_order_or_reported(
    count: int, order: object, drop_live: float, drop_answers: float
) -> None:
    """The invariant: a held line or a known gap always has a repair in
    flight, and in the end every line was shown once, in order, or counted
    as missed: a room never stops delivering."""
    rng = order  # a random.Random made by hypothesis: reproducible
    assert hasattr(rng, "random")
    store = {s: _line(s) for s in range(1, count + 1)}
    track = RoomTrack(room="r", last=0)
    shown: list[int] = []
    missed = 0
    in_flight: list[History] = []
    now = 0.0

    def take(events: list[ev.Event]) -> None:
        nonlocal missed
        for event in events:
            if isinstance(event, ev.Message):
                shown.append(event.seq)
            elif isinstance(event, ev.Missed):
                missed += event.count

    def step() -> None:
        nonlocal now
        now += 0.1 + rng.random()  # type: ignore[attr-defined]
        if in_flight and rng.random() < 0.5:  # type: ignore[attr-defined]
            asked = in_flight.pop(0)
            if rng.random() >= drop_answers:  # type: ignore[attr-defined]
                take(track.history(_answer(asked, store, count), asked))
        events, request = track.poll(now, TIMEOUT)
        take(events)
        if request is not None:
            in_flight.append(request)
        assert not track.stuck()

    for seq in range(1, count + 1):
        if rng.random() >= drop_live:  # type: ignore[attr-defined]
            take(track.line(store[seq]))
        step()
    track.seen_known(count)  # a pong tells the newest
    for _ in range(200):
        step()
        if track.last == count and not track.buffered:
            break
    assert track.last == count
    assert shown == sorted(set(shown))  # once each, in order
    assert len(shown) + missed == count  # nothing counted twice
