"""The chaos checker itself, on staged event logs (no processes): it must see
every kind of failure it reports, or the suite proves nothing."""

from __future__ import annotations

from tests.chaos.checker import Event, check, line_text
from tests.chaos.harness import link


def message(sender: str, number: int, seq: int, **extra: object) -> Event:
    return {
        "type": "message",
        "room": "r",
        "nick": sender,
        "text": line_text(sender, number),
        "seq": seq,
        **extra,
    }


SENT = {"a": [line_text("a", n) for n in range(3)], "b": [line_text("b", n) for n in range(2)]}
GOOD = [
    message("a", 0, 1),
    message("b", 0, 2),
    message("a", 1, 3),
    message("b", 1, 4),
    message("a", 2, 5),
]


def test_a_perfect_run_is_ok() -> None:
    figures = check(SENT, {}, {"x": GOOD, "y": GOOD})
    assert figures.ok, figures.problems
    assert (figures.sent, figures.acknowledged, figures.receivers) == (5, 5, 2)


def test_a_line_shown_twice_is_a_duplicate_and_out_of_sequence() -> None:
    figures = check(SENT, {}, {"x": [*GOOD[:3], message("a", 1, 3), *GOOD[3:]]})
    assert figures.duplicated == 1 and figures.out_of_order >= 1 and not figures.ok


def test_a_line_never_shown_is_lost_and_the_receiver_stuck() -> None:
    figures = check(SENT, {}, {"x": GOOD[:4], "y": GOOD})
    assert (figures.lost, figures.stuck) == (1, 1)


def test_a_hole_in_the_numbering_needs_a_missed_event() -> None:
    hole = [*GOOD[:2], {**GOOD[2], "seq": 9}, {**GOOD[3], "seq": 10}, {**GOOD[4], "seq": 11}]
    assert check(SENT, {}, {"x": hole}).gaps == 1
    explained = [*hole[:2], {"type": "missed", "room": "r", "count": 6}, *hole[2:]]
    assert check(SENT, {}, {"x": explained}).ok


def test_a_reset_restarts_the_numbering() -> None:
    reset = [*GOOD[:2], {"type": "missed", "room": "r", "count": 0, "reset": True}]
    reset += [{**m, "seq": n} for n, m in enumerate(GOOD[2:], start=1)]
    assert check(SENT, {}, {"x": reset}).ok


def test_a_senders_lines_out_of_the_order_sent_are_counted() -> None:
    swapped = [GOOD[0], GOOD[1], {**GOOD[4], "seq": 3}, GOOD[3], {**GOOD[2], "seq": 5}]
    figures = check(SENT, {}, {"x": swapped})
    assert (figures.reordered, figures.out_of_order) == (1, 0)


def test_lines_reported_undelivered_are_excused_unless_shown() -> None:
    report = {"type": "error", "code": "not_delivered", "text": line_text("a", 2), "key": "k"}
    figures = check(SENT, {"a": [report]}, {"x": GOOD[:4]})
    assert figures.ok and (figures.acknowledged, figures.undelivered) == (4, 1)
    assert check(SENT, {"a": [report]}, {"x": GOOD}).false_undelivered == 1


def connection(state: str) -> Event:
    return {"type": "connection", "state": state}


def test_a_kill_is_noticed_by_a_client_that_had_already_lost_the_broker() -> None:
    # A starved broker fell silent past the clients' limit just before the
    # kill: they said "reconnecting" then and cannot say it again after it.
    before = link([message("a", 0, 1), connection("reconnecting")])
    assert link([message("a", 0, 1), connection("reconnecting")]).noticed_since(before)


def test_a_kill_is_noticed_only_by_what_a_client_says_after_it() -> None:
    back = [connection("reconnecting"), connection("reconnected")]
    assert not link(back).noticed_since(link(back))
    assert link([*back, connection("reconnecting")]).noticed_since(link(back))
    assert not link([]).noticed_since(link([]))
    assert link([connection("reconnecting")]).noticed_since(link([]))
    # Lost then, back in between, still no word on the kill: not yet.
    lost = [connection("reconnecting")]
    assert not link([*lost, connection("reconnected")]).noticed_since(link(lost))
