"""A reconnect whose sync times out is tried again, not the end of the session.

Found by the chaos suite (tests/chaos/test_link_faults.py): over a slow link
that was cut, the rejoining client's SUB did not subscribe to its sync topic
in time, the broker refused the hello with ``sync_timeout``, and the session
closed for good: a receiver stopped, a sender reported lines undelivered
that had been stored.
"""

from __future__ import annotations

from client import events as ev
from client.session import State
from protocol import Error, Hello, Joined, Pong
from tests.conftest import joined_session, welcome


def test_a_rejoin_refused_as_sync_timeout_is_tried_again_with_fresh_sockets() -> None:
    session = joined_session()
    key = session.say("kept")
    session.take_output()
    session.on_reply(Pong(broker="b", seqs={}), 0.1)
    session.tick(100.0)  # silence: the link is cut
    assert session.state is State.RECONNECTING
    session.tick(100.0)
    session.take_output()
    session.on_reply(welcome(), 100.1)
    refused = Error(code="sync_timeout", message="your SUB never subscribed", req="hello")
    events = session.on_reply(refused, 105.0)
    assert session.state is State.RECONNECTING
    assert not [e for e in events if isinstance(e, ev.Error) and e.key]  # nothing given up
    session.tick(105.0)
    out = session.take_output()
    assert out.reset  # a fresh SUB: the old one missed its subscription
    assert [r for r in out.requests if isinstance(r, Hello)]
    session.on_reply(welcome(), 105.1)
    events = session.on_reply(Joined(room="lobby", seq=0, members=["me"]), 105.2)
    assert ev.Connection(state="reconnected") in events
    assert session.state is State.JOINED
    assert key and session.busy  # the line is still to be sent, not reported


def test_a_resume_refused_as_unavailable_is_tried_again_not_the_end() -> None:
    # Found by hand on a cluster: Redis down, then the client's broker killed
    # -9; the broker it moved to could not take the session over (Redis
    # unreachable) and refused the resume with the retryable `unavailable`,
    # and the client ended ("disconnected (unavailable)", its typed line
    # reported not delivered) instead of trying again until Redis was back.
    session = joined_session()
    key = session.say("kept")
    session.take_output()
    session.tick(100.0)  # silence: the broker is gone
    assert session.state is State.RECONNECTING
    for now in (100.0, 100.3, 100.9, 102.0, 104.1):  # the back-off grows to 4 s
        session.tick(now)
        assert [r for r in session.take_output().requests if isinstance(r, Hello)], now
    refused = Error(code="unavailable", message="cannot reach the engine", req="hello")
    events = session.on_reply(refused, 104.2)
    assert session.state is State.RECONNECTING
    assert not [e for e in events if isinstance(e, ev.Error)]  # passing, nothing given up
    session.tick(104.3)  # not asked again at once...
    assert not [r for r in session.take_output().requests if isinstance(r, Hello)]
    session.tick(105.3)  # ...but within a second, not after the grown back-off
    assert [r for r in session.take_output().requests if isinstance(r, Hello)]
    session.on_reply(welcome(), 105.4)
    events = session.on_reply(Joined(room="lobby", seq=0, members=["me"]), 105.5)
    assert ev.Connection(state="reconnected") in events
    assert key and session.busy  # the line is still to be sent, not reported
