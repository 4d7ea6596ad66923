"""client/outbox.py and client/pacing.py: lines until acknowledged or
reported, paced to the broker's own bucket."""

from __future__ import annotations

import pytest

from client import events as ev
from client.outbox import RATE_LIMITED_RETRIES, LineState, Outbox
from client.pacing import BrokerBucket
from protocol import Join, Say, SendPrivate


def _say(outbox: Outbox, text: str, room: str = "lobby", *, ready: bool = True) -> str:
    key = outbox.new_key()
    outbox.add(Say(room=room, text=text, key=key), ready=ready)
    return key


def _keys(requests: list[object]) -> list[str | None]:
    return [r.key for r in requests if isinstance(r, Say | SendPrivate)]


def test_keys_are_unique_and_carry_a_random_prefix() -> None:
    first, second = Outbox(), Outbox()
    keys = {first.new_key() for _ in range(100)} | {second.new_key() for _ in range(100)}
    assert len(keys) == 200


def test_held_lines_wait_for_their_room_and_go_in_the_order_typed() -> None:
    outbox = Outbox()
    held = _say(outbox, "for ops", "ops", ready=False)
    ready = _say(outbox, "for lobby")
    assert _keys(outbox.send_due(0.0)) == [ready]
    outbox.release({"lobby"})
    assert outbox.send_due(0.1) == []
    outbox.release({"ops"})
    assert _keys(outbox.send_due(0.2)) == [held]


def test_a_sent_line_is_resent_with_its_key_backing_off_until_acked() -> None:
    outbox = Outbox(resend_after=1.0)
    key = _say(outbox, "hello")
    outbox.send_due(0.0)
    times = [t / 10 for t in range(1, 80) if _keys(outbox.send_due(t / 10))]
    assert times == [1.0, 3.0, 7.0]  # 1, 2, 4 s apart
    assert outbox.ack(key, 8.0) and len(outbox) == 0
    assert outbox.send_due(100.0) == []


def test_an_ack_for_a_later_line_resends_an_earlier_one_at_once() -> None:
    # One connection's lines are answered in order: no ack for the first
    # while the second's came means the first was lost on the way.
    outbox = Outbox(resend_after=5.0)
    first, second, third = (_say(outbox, text) for text in ("a", "b", "c"))
    outbox.send_due(0.0)
    assert outbox.ack(second, 0.1)
    assert _keys(outbox.send_due(0.1)) == [first]
    assert outbox.state_of(third) is LineState.SENT  # not overtaken: still waiting


def test_timers_wait_while_acks_keep_coming() -> None:
    # A slow link: every line is acknowledged late, but acks flow; resending
    # would only add to the load.
    outbox = Outbox(resend_after=1.0)
    keys = [_say(outbox, f"line {n}") for n in range(20)]
    outbox.send_due(0.0)
    resent = []
    for n, key in enumerate(keys):
        now = 0.5 * (n + 1)
        resent += _keys(outbox.send_due(now))
        outbox.ack(key, now)
    assert resent == []


def test_a_deferred_line_goes_when_due_even_while_acks_flow() -> None:
    outbox = Outbox(resend_after=10.0)
    deferred, other = _say(outbox, "a"), _say(outbox, "b")
    outbox.send_due(0.0)
    outbox.later(deferred, 0.1, 1.0)  # unavailable: again in a second
    outbox.ack(other, 0.2)  # not a sign that it was lost
    assert outbox.send_due(0.5) == []
    assert _keys(outbox.send_due(1.1)) == [deferred]


def test_a_lost_connection_holds_everything_until_released() -> None:
    outbox = Outbox()
    key = _say(outbox, "hello")
    outbox.send_due(0.0)
    outbox.control(Join(room="ops", sync=1))
    assert outbox.hold_all() == [Join(room="ops", sync=1)]  # never sent: the caller's
    assert outbox.state_of(key) is LineState.HELD
    assert outbox.send_due(50.0) == []  # no resend while held
    outbox.release(None)
    assert _keys(outbox.send_due(51.0)) == [key]


def test_rate_limited_is_sent_again_first_then_reported() -> None:
    outbox = Outbox()
    outbox.bucket.configure(5.0, 10)
    key = _say(outbox, "hello")
    later = _say(outbox, "later")
    assert _keys(outbox.send_due(0.0)) == [key, later]
    now = 0.0
    for _ in range(RATE_LIMITED_RETRIES):
        assert outbox.throttled(key, now)
        now += 0.2
        assert _keys(outbox.send_due(now)) == [key]
    assert not outbox.throttled(key, now)  # the caller reports it
    assert outbox.fail(key) is not None


def test_paced_controls_take_their_turn_with_the_lines() -> None:
    outbox = Outbox()
    outbox.bucket.configure(1.0, 1)
    _say(outbox, "one")
    outbox.control(Join(room="ops", sync=1))
    assert len(outbox.send_due(0.0)) == 1
    assert outbox.send_due(0.5) == []
    assert outbox.send_due(1.0) == [Join(room="ops", sync=1)]


def test_giving_up_reports_every_line_with_its_text_and_key() -> None:
    outbox = Outbox()
    key = _say(outbox, "hello")
    events = outbox.give_up("closed")
    assert events == [
        ev.Error(
            code="not_delivered", message="closed", req="say", room="lobby", text="hello", key=key
        )
    ]


@pytest.mark.parametrize(("rate", "burst"), [(5.0, 10), (0.5, 1), (100.0, 50)])
def test_the_bucket_allows_exactly_what_the_broker_allows(rate: float, burst: int) -> None:
    from broker.ratelimit import TokenBucket  # the broker's, to compare with

    ours, theirs = BrokerBucket(rate, burst), TokenBucket(rate, burst)
    now = 0.0
    for n in range(2000):
        now += (n % 7) / (3 * rate)
        assert ours.take(now) == theirs.take(now), f"differs at {now:.3f} s"


def test_wait_says_when_the_next_token_comes() -> None:
    bucket = BrokerBucket(5.0, 1)
    assert bucket.take(0.0)
    assert bucket.wait(0.0) == pytest.approx(0.2)
    assert not bucket.take(0.1)
    assert bucket.take(0.2)
    bucket.penalize(0.2)
    assert not bucket.take(0.3)
