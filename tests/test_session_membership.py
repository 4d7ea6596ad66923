"""Who came and went while we were away (client/membership.py), in the
session core: time is a parameter, no sockets. Found by QA: after a
reconnect, people who left meanwhile were never shown leaving, and those who
joined meanwhile were not shown joining."""

from __future__ import annotations

from client import events as ev
from client.render import Renderer
from client.session import ClientSession, State
from protocol import Hello, Joined, JoinNotice, Pong
from tests.conftest import welcome


def _in_lobby_with(*others: str) -> ClientSession:
    session = ClientSession("me", ["lobby"], backlog=0, jitter=lambda: 0.5)
    session.hello(0.0)
    session.on_reply(welcome(), 0.0)
    events = session.on_reply(Joined(room="lobby", seq=0, members=["me", *others]), 0.0)
    # A first join tells who is here in its welcome: no joins of its own.
    assert [type(e) for e in events] == [ev.Welcome]
    session.take_output()
    return session


def _rejoin(
    session: ClientSession, broker: str, members: list[str]
) -> tuple[float, list[ev.Event]]:
    """Silence, a reconnect and the rejoin's ``joined``; when, and its events."""
    session.tick(10.0)
    assert session.state is State.RECONNECTING
    now = 10.0
    while not any(isinstance(r, Hello) for r in session.take_output().requests):
        now = round(now + 0.01, 2)
        session.tick(now)
    session.on_reply(welcome(broker=broker), now)
    return now, session.on_reply(Joined(room="lobby", seq=0, members=members), now)


def _meanwhile(events: list[ev.Event]) -> list[ev.Event]:
    return [e for e in events if isinstance(e, ev.Join | ev.Leave)]


def test_the_same_broker_tells_at_once_who_came_and_went_while_we_were_away() -> None:
    session = _in_lobby_with("bob")
    now, events = _rejoin(session, "b", ["me", "carol"])
    assert _meanwhile(events) == [
        ev.Join(room="lobby", nick="carol", ts=now, meanwhile=True),
        ev.Leave(room="lobby", nick="bob", reason="unknown", ts=now, meanwhile=True),
    ]
    assert session.members == {"lobby": ["me", "carol"]}
    renderer = Renderer(nick="me", room="lobby", colour=False, clock=lambda: now)
    said = [renderer.render(e).text for e in _meanwhile(events)]
    assert said[0].endswith("carol joined #lobby (while we were away)")
    assert said[1].endswith("bob left #lobby (while we were away)")


def test_a_rejoin_with_nobody_changed_tells_nothing() -> None:
    session = _in_lobby_with("bob")
    _, events = _rejoin(session, "b", ["bob", "me"])
    assert _meanwhile(events) == []


def test_a_restarted_broker_gives_the_others_time_to_come_back_before_they_count_as_gone() -> None:
    session = _in_lobby_with("bob", "dave")
    now, events = _rejoin(session, "b2", ["me", "carol"])
    # carol is new; bob and dave may just not be back yet
    assert _meanwhile(events) == [ev.Join(room="lobby", nick="carol", ts=now, meanwhile=True)]
    assert sorted(session.members["lobby"]) == ["bob", "carol", "dave", "me"]
    # dave comes back: no news (he never left, as far as anyone could see)
    assert session.on_broadcast(JoinNotice(room="lobby", nick="dave", ts=now + 1), now + 1) == []
    later: list[ev.Event] = []
    t = now
    while t < now + 20:
        t = round(t + 0.5, 2)
        later += _meanwhile(session.tick(t))
        session.on_reply(Pong(broker="b2", seqs={"lobby": 0}), t)  # the broker is there
    # bob never did: gone, once the broker's timeout and three heartbeats passed
    (gone,) = later
    assert isinstance(gone, ev.Leave) and gone.nick == "bob" and gone.meanwhile
    assert now + 5.0 + 3.0 <= gone.ts < now + 9.0
    assert sorted(session.members["lobby"]) == ["carol", "dave", "me"]
