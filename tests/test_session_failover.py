"""Failover between brokers of one cluster, in the session core (issue 14):
time is a parameter, no sockets. The end-to-end counterpart, with real broker
processes on a real Redis, is tests/cluster/test_failover.py."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client import events as ev
from client.failover import CONNECT_TRY, parse_servers
from client.render import Renderer
from client.session import ClientSession, Output, State
from protocol import Ack, ChatMessage, Error, Hello, Joined, ProtocolError, Say, Shutdown
from tests.conftest import welcome

A, B, C = "tcp://10.0.0.1:5555", "tcp://10.0.0.2:5555", "tcp://10.0.0.3:5555"


def _joined(servers: list[str]) -> ClientSession:
    session = ClientSession("me", ["lobby", "dev"], server=servers, backlog=0, jitter=lambda: 0.5)
    session.hello(0.0)
    session.on_reply(welcome(session="tok"), 0.0)
    for room in ("lobby", "dev"):
        session.on_reply(Joined(room=room, seq=0, members=["me"]), 0.0)
    session.take_output()
    return session


def _tries(session: ClientSession, start: float, end: float) -> list[tuple[float, str, Output]]:
    """Every hello sent between ``start`` and ``end`` (10 ms ticks): when, to
    which endpoint, and the output it came in."""
    tries = []
    now = start
    while now < end:
        session.tick(now)
        out = session.take_output()
        if any(isinstance(r, Hello) for r in out.requests):
            tries.append((now, session.server, out))
        now = round(now + 0.01, 2)
    return tries


def test_a_lost_broker_is_left_for_the_next_endpoint_round_robin() -> None:
    session = _joined([A, B, C])
    events = session.tick(10.0)  # silence past the liveness limit
    assert events == [ev.Connection(state="reconnecting", endpoint=A)]
    tries = _tries(session, 10.0, 20.0)
    assert [server for _, server, _ in tries][:4] == [B, C, A, B]
    for _, _, out in tries:
        assert out.reset  # a fresh DEALER to the new endpoint for every try
        (hello,) = [r for r in out.requests if isinstance(r, Hello)]
        assert hello.resume == "tok" and hello.nick == "me"
        assert sorted(hello.rooms) == ["dev", "lobby"]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(tries)]
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]  # the usual backoff


def test_after_a_shutdown_the_first_try_goes_to_the_next_broker() -> None:
    session = _joined([A, B])
    session.on_reply(Shutdown(reason="the broker is shutting down"), 5.0)
    (first, *_) = _tries(session, 5.0, 6.0)
    assert first[1] == B and 5.05 <= first[0] <= 5.3


def test_a_shutdown_with_other_brokers_tells_one_story_moving_then_moved() -> None:
    # Found by QA: "will reconnect when it is back", then "lost the broker",
    # then "moved to ...". Now: moving on, then moved.
    session = _joined([A, B])
    events = session.on_reply(Shutdown(reason="the broker is shutting down"), 5.0)
    (when, server, _) = _tries(session, 5.0, 6.0)[0]
    assert server == B
    session.on_reply(welcome(broker="brokerB", session="tok"), when + 0.01)
    for room in ("lobby", "dev"):
        events += session.on_reply(Joined(room=room, seq=0, members=["me"]), when + 0.02)
    renderer = Renderer(nick="me", room="lobby", colour=False, clock=lambda: 0.0)
    said = [text for e in events if (text := renderer.render(e).text)]
    assert len(said) == 2, said
    assert said[0].endswith("the broker is shutting down; moving to another broker...")
    assert said[1].endswith(f"moved to broker {B}; nothing lost")
    # JSON mode keeps every state change, marked as the shutdown's
    assert ev.Connection(state="reconnecting", endpoint=A, shutdown=True) in events


def test_a_shutdown_of_the_only_broker_is_one_notice_too() -> None:
    session = _joined([A])
    events = session.on_reply(Shutdown(reason="the broker is shutting down"), 5.0)
    renderer = Renderer(nick="me", room="lobby", colour=False, clock=lambda: 0.0)
    said = [text for e in events if (text := renderer.render(e).text)]
    assert len(said) == 1, said
    assert said[0].endswith("the broker is shutting down; will reconnect when it is back")


def test_failover_resumes_keeps_nick_and_rooms_and_resends_unacked_lines_with_their_keys() -> None:
    session = _joined([A, B])
    key = session.say("typed just before A died")
    (sent,) = [r for r in session.take_output().requests if isinstance(r, Say)]
    session.tick(10.0)
    assert session.state is State.RECONNECTING
    (when, server, _) = _tries(session, 10.0, 11.0)[0]
    assert server == B
    session.on_reply(welcome(broker="brokerB", session="tok"), when + 0.01)
    out = session.take_output()
    assert out.connect_pub == "tcp://127.0.0.1:1"
    events: list[ev.Event] = []
    for room in ("lobby", "dev"):
        events += session.on_reply(Joined(room=room, seq=0, members=["me"]), when + 0.02)
    # another broker resumed the session whole: a move, not a restart
    moved = ev.Connection(state="reconnected", moved=True, broker="brokerB", endpoint=B)
    assert moved in events
    assert session.nick == "me" and session.rooms == ["lobby", "dev"]
    resent = [r for r in session.take_output().requests if isinstance(r, Say)]
    assert resent == [sent] and resent[0].key == key  # same key: B drops a duplicate
    session.on_reply(Ack(key=key, room="lobby", seq=1, id="i1"), when + 0.03)
    assert session.unacked == 0


def test_a_wildcard_pub_is_reached_on_the_host_of_the_broker_failed_over_to() -> None:
    session = _joined(["tcp://127.0.0.1:5555", "tcp://127.0.0.2:6666"])
    session.tick(10.0)
    _tries(session, 10.0, 10.2)
    assert session.server == "tcp://127.0.0.2:6666"
    reply = welcome(broker="b2", session="tok")
    session.on_reply(
        type(reply)(
            v=reply.v,
            nick=reply.nick,
            session=reply.session,
            pub="tcp://*:6667",
            broker=reply.broker,
            heartbeat=reply.heartbeat,
            timeout=reply.timeout,
            limits=reply.limits,
        ),
        10.3,
    )
    assert session.take_output().connect_pub == "tcp://127.0.0.2:6667"


def test_a_gap_left_by_the_failover_is_repaired_from_the_new_broker() -> None:
    session = _joined([A, B])
    session.on_broadcast(ChatMessage(room="lobby", nick="x", text="1", ts=1, id="1", seq=1), 1.0)
    session.tick(10.0)
    (when, _, _) = _tries(session, 10.0, 11.0)[0]
    session.on_reply(welcome(broker="brokerB", session="tok"), when)
    session.on_reply(Joined(room="dev", seq=0, members=["me"]), when)
    # Lines 2..4 were published while we moved: B's joined says 4.
    session.on_reply(Joined(room="lobby", seq=4, members=["me"]), when)
    history = [r for r in session.take_output().requests if type(r).__name__ == "History"]
    assert [(r.room, r.after) for r in history] == [("lobby", 1)]  # type: ignore[attr-defined]


def test_a_dropped_connection_loses_the_broker_at_once_and_the_first_try_goes_out() -> None:
    session = _joined([A, B])
    session.say("typed as A died")
    session.take_output()
    assert session.tick(0.5) == []  # far from three silent heartbeats (3 s here)
    assert session.link_dropped(0.5) == [ev.Connection(state="reconnecting", endpoint=A)]
    assert session.state is State.RECONNECTING
    (when, server, out) = _tries(session, 0.5, 1.0)[0]
    assert when == 0.5 and server == B and out.reset  # the first try: at once, on B
    (hello,) = [r for r in out.requests if isinstance(r, Hello)]
    assert hello.resume == "tok"
    assert session.unacked == 1  # the line waits to go again to B, with its key


def test_a_drop_matters_only_to_a_joined_session() -> None:
    session = ClientSession("me", server=[A, B], jitter=lambda: 0.5)
    session.hello(0.0)
    assert session.link_dropped(0.1) == [] and session.state is State.JOINING
    session = _joined([A, B])
    session.tick(10.0)  # lost by silence: the tries run
    session.take_output()
    assert session.link_dropped(10.05) == [] and session.state is State.RECONNECTING
    session.leave()
    assert session.link_dropped(10.1) == [] and session.state is State.CLOSING


def test_one_endpoint_keeps_the_old_schedule() -> None:
    session = _joined([A])
    session.tick(10.0)
    tries = _tries(session, 10.0, 18.0)
    assert {server for _, server, _ in tries} == {A}
    assert [out.reset for _, _, out in tries][:3] == [True, False, False]


def test_a_first_hello_unanswered_moves_on_to_the_next_endpoint() -> None:
    session = ClientSession("me", ["lobby"], server=f"{A},{B}", backlog=0)
    session.hello(0.0)
    session.take_output()
    tries = _tries(session, 0.0, 2 * CONNECT_TRY + 0.05)
    assert [(when, server) for when, server, _ in tries] == [(CONNECT_TRY, B), (2 * CONNECT_TRY, A)]
    assert all(out.reset for _, _, out in tries)
    session.on_reply(welcome(), 4.1)
    assert _tries(session, 4.1, 10.0) == []  # welcomed: stays


def test_a_first_hello_to_a_single_endpoint_is_not_retried() -> None:
    session = ClientSession("me", ["lobby"], server=A, backlog=0)
    session.hello(0.0)
    session.take_output()
    assert _tries(session, 0.0, 10.0) == []


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (A, (A,)),
        (f"{A},{B}", (A, B)),
        (f" {A} , {B} ,", (A, B)),
        ([A, f"{B},{C}"], (A, B, C)),
        ([A, B, A], (A, B)),
    ],
)
def test_endpoints_are_given_as_a_list_or_comma_separated(
    given: str | list[str], expected: tuple[str, ...]
) -> None:
    assert parse_servers(given) == expected


@pytest.mark.parametrize("given", ["", [], f"{A},nonsense", ["tcp://host"]])
def test_a_bad_endpoint_list_is_a_clear_error(given: str | list[str]) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_servers(given)
    assert caught.value.code == "bad_endpoint"


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=4),
    losses=st.lists(st.sampled_from(["silence", "shutdown", "not_joined"]), min_size=1, max_size=4),
    tries=st.integers(min_value=1, max_value=5),
)
def test_any_run_of_losses_visits_the_endpoints_in_turn_and_always_resumes(
    count: int, losses: list[str], tries: int
) -> None:
    servers = [f"tcp://10.0.0.{n + 1}:5555" for n in range(count)]
    session = _joined(servers)
    visited = [session.server]
    now = 0.0
    for loss in losses:
        now += 100.0
        if loss == "silence":
            session.tick(now)
        elif loss == "shutdown":
            session.on_reply(Shutdown(reason="bye"), now)
        else:
            session.on_reply(Error(code="not_joined", message="who?", req="say"), now)
        assert session.state is State.RECONNECTING
        made = 0
        while made < tries:
            now = round(now + 0.05, 2)
            session.tick(now)
            out = session.take_output()
            for hello in (r for r in out.requests if isinstance(r, Hello)):
                assert hello.resume == "tok" and hello.nick == "me"
                made += 1
                visited.append(session.server)
                assert out.reset or count == 1
        session.on_reply(welcome(session="tok"), now)
        for room in ("lobby", "dev"):
            session.on_reply(Joined(room=room, seq=0, members=["me"]), now)
        assert session.state is State.JOINED and session.rooms == ["lobby", "dev"]
        session.take_output()
    expected = [servers[n % count] for n in range(len(visited))]
    assert visited == expected


def test_a_broker_that_could_not_resume_the_session_is_told_as_a_restart() -> None:
    session = _joined([A, B])
    session.tick(10.0)
    (when, server, _) = _tries(session, 10.0, 11.0)[0]
    assert server == B
    # B did not have our session (the reaper dropped it): a new one, rebuilt
    session.on_reply(welcome(broker="brokerB", session="fresh"), when + 0.01)
    events: list[ev.Event] = []
    for room in ("lobby", "dev"):
        events += session.on_reply(Joined(room=room, seq=0, members=["me"]), when + 0.02)
    restarted = ev.Connection(state="reconnected", restarted=True, broker="brokerB", endpoint=B)
    assert restarted in events
    # and the next loss, back to the same broker that kept it: neither
    session.tick(when + 20.0)
    (again, server, _) = _tries(session, when + 20.0, when + 21.0)[0]
    session.on_reply(welcome(broker="brokerB", session="fresh"), again + 0.01)
    events = []
    for room in ("lobby", "dev"):
        events += session.on_reply(Joined(room=room, seq=0, members=["me"]), again + 0.02)
    assert ev.Connection(state="reconnected", endpoint=server) in events


# --- a broker refusing our key while we reconnect (docs/SECURITY.md) ----------

REFUSED = "authentication failed: the broker at {} refused our key"


def test_a_refusal_while_reconnecting_is_told_once_and_the_others_are_tried() -> None:
    session = _joined([A, B, C])
    session.tick(10.0)
    events = session.handshake_refused(B, REFUSED.format(B), 10.1)
    assert events == [ev.Connection(state="auth_failed", endpoint=B, message=REFUSED.format(B))]
    assert session.handshake_refused(B, REFUSED.format(B), 10.2) == []  # told already
    assert session.state is State.RECONNECTING
    # B is skipped while others remain: the tries go to C and A only.
    assert {server for _, server, _ in _tries(session, 10.2, 20.0)} == {A, C}


def test_when_every_broker_refused_our_key_the_session_ends_auth_failed() -> None:
    session = _joined([A, B])
    session.say("typed before the refusals")
    session.tick(10.0)
    assert session.handshake_refused(A, REFUSED.format(A), 10.1)[0].state == "auth_failed"
    (error,) = session.handshake_refused(B, REFUSED.format(B), 10.2)
    assert isinstance(error, ev.Error) and error.code == "auth_failed"
    assert B in error.message and "every broker refused it" in error.message
    assert session.state is State.CLOSED and session.close_reason == "auth_failed"
    (lost,) = session.undelivered("not delivered")  # the front-end reports it
    assert isinstance(lost, ev.Error) and lost.text == "typed before the refusals"


def test_with_one_broker_a_refusal_while_reconnecting_ends_the_session() -> None:
    session = _joined([A])
    session.tick(10.0)
    (error,) = session.handshake_refused(A, REFUSED.format(A), 10.1)
    assert isinstance(error, ev.Error) and error.code == "auth_failed"
    assert A in error.message and "giving up" in error.message
    assert session.state is State.CLOSED


def test_a_refusal_is_news_again_after_a_welcome_and_ignored_while_joined() -> None:
    session = _joined([A, B])
    # Joined: the broker still answers; a fresh try would tell (ignored).
    assert session.handshake_refused(A, REFUSED.format(A), 1.0) == []
    session.tick(10.0)
    assert session.handshake_refused(B, REFUSED.format(B), 10.1)[0].state == "auth_failed"
    session.on_reply(welcome(session="tok"), 10.5)
    for room in ("lobby", "dev"):
        session.on_reply(Joined(room=room, seq=0, members=["me"]), 10.5)
    assert session.state is State.JOINED
    session.tick(30.0)
    events = session.handshake_refused(B, REFUSED.format(B), 30.1)
    assert [e.state for e in events if isinstance(e, ev.Connection)] == ["auth_failed"]
