"""client/link.py and client/lifecycle.py: the link to the broker (what its
welcome said, liveness, when and where to say hello again) and the table of
the session's states. Time is a parameter, no sockets."""

from __future__ import annotations

import pytest

from client import events as ev
from client.failover import CONNECT_TRY
from client.lifecycle import TRANSITIONS, State, check_move
from client.link import Link
from protocol import ProtocolError
from tests.conftest import welcome

A, B = "tcp://10.0.0.1:5555", "tcp://10.0.0.2:5555"


def _link(*servers: str) -> Link:
    return Link(list(servers) or [A], jitter=lambda: 0.5)


def test_a_welcome_sets_the_timings_and_names_the_pub_to_connect() -> None:
    link = _link()
    assert link.welcome(welcome(), 10.0) == "tcp://127.0.0.1:1"
    assert (link.session_token, link.broker_id, link.heartbeat) == ("tok", "b", 1.0)
    assert link.limits is not None and link.broker_timeout == 5.0
    assert link.dead_after == 3.0  # three heartbeats
    assert not link.restarted
    assert not link.ping_due(10.5) and link.ping_due(11.0) and not link.ping_due(11.5)


def test_a_welcome_from_another_broker_is_a_restart() -> None:
    link = _link()
    link.welcome(welcome(broker="b1"), 0.0)
    link.welcome(welcome(broker="b1"), 1.0)
    assert not link.restarted
    link.welcome(welcome(broker="b2", session="new"), 2.0)
    assert link.restarted and not link.moved


def test_another_broker_that_resumed_our_session_is_a_move() -> None:
    link = _link(A, B)
    link.welcome(welcome(broker="b1", session="tok"), 0.0)
    link.welcome(welcome(broker="b2", session="tok"), 1.0)  # the same token: taken over
    assert link.moved


def test_the_pub_override_wins_over_the_welcome() -> None:
    link = Link(A, pub_override="tcp://10.0.0.9:6000")
    assert link.welcome(welcome(), 0.0) == "tcp://10.0.0.9:6000"


def test_the_broker_is_dead_after_three_silent_heartbeats() -> None:
    link = _link()
    link.welcome(welcome(), 0.0)
    link.last_heard = 5.0
    assert not link.dead(8.0) and link.dead(8.01)


def test_a_first_hello_moves_on_only_with_several_endpoints_and_no_welcome() -> None:
    alone = _link(A)
    alone.hello(0.0)
    assert not alone.first_try_over(CONNECT_TRY * 10)
    pair = _link(A, B)
    pair.hello(0.0)
    assert not pair.first_try_over(CONNECT_TRY - 0.01)
    assert pair.first_try_over(CONNECT_TRY) and pair.server == B
    assert not pair.first_try_over(CONNECT_TRY + 0.1)  # the clock starts again
    pair.welcome(welcome(), CONNECT_TRY + 0.2)
    assert not pair.first_try_over(CONNECT_TRY * 10)  # welcomed once: resumes instead


def test_one_endpoint_reconnects_on_fresh_sockets_for_the_first_try_only() -> None:
    link = _link(A)
    link.lost(10.0)
    assert link.try_due(10.0) is True
    assert link.try_due(10.0) is None  # the backoff
    later = [link.try_due(10.0 + t / 10) for t in range(1, 100)]
    assert [fresh for fresh in later if fresh is not None][:2] == [False, False]
    assert link.server == A


def test_several_endpoints_reconnect_to_the_next_one_on_fresh_sockets_every_try() -> None:
    link = _link(A, B)
    link.lost(10.0)
    assert link.try_due(10.0) is True and link.server == B
    tries = [link.try_due(10.0 + t / 10) for t in range(1, 100)]
    assert [fresh for fresh in tries if fresh is not None][:2] == [True, True]


def test_waiting_for_our_nickname_is_said_once_and_ends() -> None:
    link = _link(A)
    link.welcome(welcome(), 0.0)  # timeout 5, dead after 3
    link.lost(10.0)
    assert link.try_due(10.0) is True  # fresh sockets at 10: the old session ends by 18
    assert link.wait_for_nick(11.0) == [ev.Connection(state="waiting_for_nick", wait=7.0)]
    assert link.wait_for_nick(12.0) == []
    assert link.wait_for_nick(18.0) is None
    link.lost(20.0)
    assert link.wait_for_nick(20.5) != []  # said again after a new loss


def test_connection_events_name_the_endpoint_only_with_several() -> None:
    assert _link(A).named() == ""
    assert _link(A, B).named() == A


def test_every_state_may_end_closed_and_closed_is_final() -> None:
    assert all(State.CLOSED in TRANSITIONS[s] for s in State if s is not State.CLOSED)
    assert TRANSITIONS[State.CLOSED] == frozenset()
    assert set(TRANSITIONS) == set(State)


def test_a_move_the_table_does_not_allow_is_refused() -> None:
    assert check_move(State.IDLE, State.JOINING) is State.JOINING
    with pytest.raises(ProtocolError) as refused:
        check_move(State.CLOSED, State.JOINING)
    assert refused.value.code == "not_joined" and "closed to joining" in str(refused.value)
