"""Topics and away state in the client's session core (client/presence.py), no sockets."""

from __future__ import annotations

import pytest

from client import events as ev
from client.events import encode_event
from client.session import ClientSession, State
from protocol import (
    Away,
    AwayNotice,
    AwayReply,
    ErrorCode,
    Joined,
    NickNotice,
    Pong,
    ProtocolError,
    Topic,
    TopicNotice,
    TopicReply,
    WhoReply,
    encode,
)
from tests.conftest import welcome


def joined_session() -> tuple[ClientSession, list[ev.Event]]:
    session = ClientSession("me", ["lobby"], backlog=0)
    session.hello(0.0)
    session.take_output()
    session.on_reply(welcome(), 0.0)
    events = session.on_reply(
        Joined(
            room="lobby",
            seq=0,
            members=["me", "bob", "carol"],
            topic="plans",
            away={"carol": "lunch"},
        ),
        0.0,
    )
    session.take_output()
    return session, events


def test_joined_carries_the_topic_and_who_is_away() -> None:
    session, events = joined_session()
    assert events == [
        ev.Welcome(
            nick="me", room="lobby", rooms=["lobby"], members=["me", "bob", "carol"], topic="plans"
        )
    ]
    assert session.presence.topics == {"lobby": "plans"}
    assert session.presence.away == {"carol": "lunch"}


def test_topic_requests_and_answers() -> None:
    session, _ = joined_session()
    session.topic()
    session.topic("  new plans ", room="#Lobby")
    assert session.take_output().requests == [
        Topic(room="lobby"),
        Topic(room="lobby", text="new plans"),
    ]
    with pytest.raises(ProtocolError) as raised:
        session.topic("x", room="elsewhere")
    assert raised.value.code == ErrorCode.NOT_IN_ROOM
    with pytest.raises(ProtocolError):
        session.topic("x" * 600)
    assert session.on_reply(TopicReply(room="lobby", text="plans", nick="bob", ts=3.0), 4.0) == [
        ev.Topic(room="lobby", text="plans", nick="bob", ts=3.0)
    ]
    notice = TopicNotice(room="lobby", text="new plans", nick="me", ts=5.0)
    assert session.on_broadcast(notice, 5.0) == [
        ev.Topic(room="lobby", text="new plans", nick="me", ts=5.0, changed=True)
    ]
    assert session.presence.topics["lobby"] == "new plans"


def test_away_notices_once_per_change_and_the_automatic_answer() -> None:
    session, _ = joined_session()
    notice = AwayNotice(room="lobby", nick="bob", text="gone", ts=1.0)
    assert session.on_broadcast(notice, 1.0) == [ev.Away(nick="bob", text="gone")]
    # The same news from a second shared room is not news.
    assert session.on_broadcast(notice, 1.0) == []
    assert session.presence.away == {"carol": "lunch", "bob": "gone"}
    assert session.on_reply(AwayReply(nick="bob", text="gone"), 2.0) == [
        ev.Away(nick="bob", text="gone", auto=True)
    ]
    session.on_broadcast(NickNotice(room="lobby", old="bob", new="robert", ts=3.0, id="n"), 3.0)
    assert session.presence.away["robert"] == "gone"
    session.on_reply(WhoReply(room="lobby", members=["me", "robert", "carol"], away={}), 4.0)
    assert session.presence.away == {}


def test_our_own_away_is_confirmed_once() -> None:
    session, _ = joined_session()
    session.away("  brb ")
    assert session.take_output().requests == [Away(text="brb")]
    own = AwayNotice(room="lobby", nick="me", text="brb", ts=1.0)
    assert session.on_broadcast(own, 1.0) == []
    assert session.on_reply(AwayReply(nick="me", text="brb"), 1.0) == [
        ev.Away(nick="me", text="brb", auto=False)
    ]
    session.away()
    assert session.take_output().requests == [Away()]


def test_json_events_and_wire_shapes() -> None:
    assert encode_event(
        ev.Topic(room="lobby", text="\x1b[2J", nick="bob", ts=1.0, changed=True)
    ) == (
        b'{"type":"topic","room":"lobby","text":"\\u001b[2J","nick":"bob","ts":1.0,"changed":true}'
    )
    assert encode_event(ev.Away(nick="bob", text="lunch", auto=True)) == (
        b'{"type":"away","nick":"bob","text":"lunch","auto":true}'
    )
    assert encode(Topic(room="lobby")) == b'{"type":"topic","room":"lobby"}'
    assert encode(Away()) == b'{"type":"away"}'


def test_our_away_message_is_set_again_after_a_reconnect() -> None:
    session, _ = joined_session()
    session.away("lunch")
    session.on_reply(AwayReply(nick="me", text="lunch"), 1.0)
    session.take_output()
    # The broker restarts: a new broker id in a pong means a new session.
    session.on_reply(Pong(broker="another", seqs={}), 2.0)
    assert session.state is State.RECONNECTING
    session.take_output()
    session.on_reply(welcome(broker="another"), 3.0)
    session.on_reply(Joined(room="lobby", seq=0, members=["me"]), 3.0)
    assert session.state is State.JOINED
    assert Away(text="lunch") in session.take_output().requests
    # Its confirmation is not news: the user set it long ago.
    assert session.on_reply(AwayReply(nick="me", text="lunch"), 3.0) == []
    session.away()
    assert session.on_reply(AwayReply(nick="me", text=""), 4.0) == [ev.Away(nick="me", text="")]
