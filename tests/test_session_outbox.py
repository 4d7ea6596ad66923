"""client/outbox.py and client/pacing.py: lines until acknowledged or
reported, paced to the broker's own bucket."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(1, 30),
    rng=st.randoms(use_true_random=False),
    drop=st.floats(0, 0.6),
)
def test_under_any_losses_every_line_is_stored_once(count: int, rng: Random, drop: float) -> None:
    """The outbox's guarantee: whatever is lost on the way (requests, acks),
    refused by a full socket, refused as unavailable or cut off by a lost
    connection, every line ends up stored by the broker, and acknowledged."""
    outbox = Outbox(resend_after=1.0)
    keys = [_say(outbox, f"line {n}") for n in range(count)]
    stored: list[str] = []
    wire: list[Say | SendPrivate] = []
    now = 0.0

    def broker(lossy: bool) -> None:
        while wire:
            line = wire.pop(0)
            assert line.key is not None
            if lossy and rng.random() < drop / 3:
                outbox.later(line.key, now, 1.0)  # unavailable: not stored
                continue
            if line.key not in stored:
                stored.append(line.key)
            if not (lossy and rng.random() < drop):  # the ack may be lost too
                outbox.ack(line.key, now)

    for _ in range(60):
        now += 0.1 + rng.random()
        lossy = True
        sent = outbox.send_due(now)
        if sent and rng.random() < drop / 2:
            cut = rng.randrange(len(sent))
            outbox.not_sent(sent[cut:])  # the socket's queue was full
            sent = sent[:cut]
        wire += [r for r in sent if isinstance(r, Say | SendPrivate) and rng.random() >= drop]
        if rng.random() < drop / 4:
            outbox.hold_all()  # the connection is lost, and what was on it
            wire.clear()
            outbox.release(None)  # ... and back
        broker(lossy)
    for _ in range(40):  # the faults are over
        now += 2.0
        wire += [r for r in outbox.send_due(now) if isinstance(r, Say | SendPrivate)]
        broker(False)
    assert sorted(stored) == sorted(keys)
    assert len(outbox) == 0


@given(
    count=st.integers(1, 30),
    rng=st.randoms(use_true_random=False),
    fault=st.floats(0, 0.6),
)
def test_without_refusals_lines_are_stored_in_the_order_typed(
    count: int, rng: Random, fault: float
) -> None:
    """docs/RELIABILITY.md, "reordered": what the transport can do to one
    connection (a full socket refuses a suffix of a send, a paused broker
    lets the resend timer fire, acks go missing, a lost connection loses
    what was on it) never stores a line after one typed later. Only a
    refusal by the broker (``unavailable``, ``rate_limited``) can: the lines
    after it are already on their way."""
    outbox = Outbox(resend_after=1.0)
    keys = [_say(outbox, f"line {n}") for n in range(count)]
    stored: list[str] = []
    wire: list[Say | SendPrivate] = []
    now = 0.0

    def broker(paused: bool) -> None:
        while wire and not paused:
            line = wire.pop(0)
            assert line.key is not None
            if line.key not in stored:
                stored.append(line.key)
            if rng.random() >= fault:  # the ack may be lost
                outbox.ack(line.key, now)

    for _ in range(60):
        now += 0.1 + rng.random()
        sent = outbox.send_due(now)
        if sent and rng.random() < fault / 2:
            cut = rng.randrange(len(sent))
            outbox.not_sent(sent[cut:])  # the socket's queue was full
            sent = sent[:cut]
        wire += [r for r in sent if isinstance(r, Say | SendPrivate)]
        if rng.random() < fault / 4:
            del wire[rng.randrange(len(wire) + 1) :]  # the connection is lost...
            outbox.hold_all()
            outbox.release(None)  # ... and made again
        broker(paused=rng.random() < fault)
    for _ in range(40):  # the faults are over
        now += 2.0
        wire += [r for r in outbox.send_due(now) if isinstance(r, Say | SendPrivate)]
        broker(paused=False)
    assert stored == keys
