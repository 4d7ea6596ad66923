"""client/rooms.py, client/outgoing.py and client/inbound.py: the session
core's rooms, its output with the two ledgers, and the routing of what the
broker sends. No sockets; time is a parameter."""

from __future__ import annotations

import typing

from client import events as ev
from client.inbound import _BROADCASTS, _REPLIES
from client.outbox import Outbox
from client.outgoing import Outgoing
from client.requests import Purpose, RequestTracker
from client.rooms import Rooms
from protocol import (
    Broadcast,
    History,
    HistoryReply,
    Join,
    Joined,
    JoinNotice,
    Pong,
    Reply,
    Say,
    Who,
    room_topic,
    sync_topic,
)
from tests.conftest import joined_session
from tests.test_session import _line


def _rooms(*, backlog: int = 0) -> tuple[Rooms, Outgoing]:
    sending = Outgoing(Outbox(), RequestTracker())
    sending.open = True
    return Rooms(sending, backlog=backlog, repair_timeout=3.0), sending


def _in(rooms: Rooms, room: str, seq: int, **fields: typing.Any) -> list[ev.Event]:
    rooms.expect([room], "tok")
    events, _, _ = rooms.joined(
        Joined(room=room, seq=seq, members=["me"], **fields), token="tok", restarted=False
    )
    return events


# --- Rooms --------------------------------------------------------------------------


def test_a_room_is_ours_from_its_joined_with_the_backlog_below() -> None:
    rooms, sending = _rooms(backlog=5)
    rooms.expect(["lobby"], "tok")
    assert "lobby" not in rooms and "lobby" in rooms.joins
    assert sending.take().subscribe == [(True, room_topic("lobby")), (True, sync_topic("tok", 0))]
    events, held, again = rooms.joined(
        Joined(room="lobby", seq=20, members=["me", "bob"]), token="tok", restarted=False
    )
    assert (events, held, again) == ([], [], False)
    assert rooms.names() == ["lobby"] and rooms.membership.members == {"lobby": ["me", "bob"]}
    track = rooms.tracks["lobby"]
    assert (track.last, track.oldest, track.history_until) == (15, 16, 20)
    assert rooms.older("lobby", 10) == History(room="lobby", before=16, limit=10)


def test_a_join_of_its_own_subscribes_and_unsubscribes_its_sync_topic() -> None:
    rooms, sending = _rooms()
    assert rooms.begin("ops", "tok") == 1
    assert rooms.begin("ops", "tok") is None  # already being joined
    assert sending.take().subscribe == [(True, room_topic("ops")), (True, sync_topic("tok", 1))]
    rooms.joined(Joined(room="ops", seq=0, members=["me"]), token="tok", restarted=False)
    assert sending.take().subscribe == [(False, sync_topic("tok", 1))]


def test_a_rejoin_with_another_epoch_is_a_reset_and_a_lower_seq_is_not() -> None:
    rooms, _ = _rooms()
    _in(rooms, "lobby", 10, epoch="e1")
    assert _in(rooms, "lobby", 4, epoch="e1") == []  # reordering, never a reset
    assert rooms.tracks["lobby"].last == 10
    (reset,) = _in(rooms, "lobby", 4, epoch="e2")
    assert isinstance(reset, ev.Missed) and reset.reset
    assert rooms.tracks["lobby"].last == 4


def test_an_old_broker_without_epochs_resets_only_when_restarted_with_less() -> None:
    rooms, _ = _rooms()
    _in(rooms, "lobby", 10)
    rooms.expect(["lobby"], "tok")
    events, _, again = rooms.joined(
        Joined(room="lobby", seq=4, members=["me"]), token="tok", restarted=True
    )
    assert again and [type(e) for e in events] == [ev.Missed]


def test_the_hello_names_our_rooms_or_the_wanted_ones_and_joins_unanswered() -> None:
    rooms, _ = _rooms()
    assert rooms.hello_rooms(["lobby", "dev"], ["ops", "lobby"]) == ["lobby", "dev", "ops"]
    _in(rooms, "dev", 0)
    assert rooms.hello_rooms(["lobby"], ["ops"]) == ["dev", "ops"]


def test_a_refused_join_matters_unless_it_is_stale() -> None:
    rooms, sending = _rooms()
    _in(rooms, "lobby", 0)
    sending.take()
    assert not rooms.refused("lobby")  # a stale join's refusal for a room we are in
    assert rooms.names() == ["lobby"] and sending.take().subscribe == []
    rooms.expect(["lobby"], "tok")  # a rejoin, then refused: no longer ours
    sending.take()
    assert rooms.refused("lobby")
    assert rooms.names() == [] and sending.take().subscribe == [(False, room_topic("lobby"))]


def test_repairs_go_out_only_while_open_and_are_tracked_as_repairs() -> None:
    rooms, sending = _rooms()
    _in(rooms, "lobby", 0)
    sending.take()
    sending.open = False  # reconnecting: the rejoin tells where the room stands
    assert rooms.pong(Pong(broker="b", seqs={"lobby": 5}), 1.0) == []
    assert rooms.pong(Pong(broker="b", seqs={"lobby": 5}), 2.0) == []
    assert sending.take().requests == []
    sending.open = True
    rooms.poll_all(3.0)
    (asked,) = sending.take().requests
    assert isinstance(asked, History) and (asked.after, asked.before) == (0, 6)
    assert rooms.repairs == 1
    pending = sending.requests.answered("history", "lobby")
    assert pending is not None and pending.purpose is Purpose.REPAIR


def test_a_user_history_answer_ends_with_a_marker_and_moves_the_oldest() -> None:
    rooms, sending = _rooms()
    _in(rooms, "lobby", 10)
    ask = rooms.older("lobby", 2)
    number = sending.track(ask, 0.0)
    reply = HistoryReply(room="lobby", messages=[_line(5), _line(6)], seq=10)
    events = rooms.history(reply, sending.requests.answered("history", "lobby"), 1.0)
    assert [e.seq for e in events if isinstance(e, ev.Message)] == [5, 6]
    assert events[-1] == ev.HistoryEnd(room="lobby", count=2)
    assert sending.requests.take_completions() == [(number, events[-1])]
    assert rooms.tracks["lobby"].oldest == 5


def test_a_lost_connection_starts_every_join_over() -> None:
    rooms, _ = _rooms()
    _in(rooms, "lobby", 0)
    rooms.begin("ops", "tok")
    rooms.lost()
    assert "ops" not in rooms.joins and rooms.names() == ["lobby"]


# --- Outgoing ---------------------------------------------------------------------------


def test_lines_and_paced_requests_leave_only_while_open() -> None:
    sending = Outgoing(Outbox(), RequestTracker())
    sending.outbox.add(Say(room="lobby", text="hi", key="k1"), ready=True)
    join = Join(room="ops", sync=1)
    number = sending.pace(join, 0.0)
    sending.send(Who(room="lobby"))  # not paced: goes at once
    assert sending.take().requests == [Who(room="lobby")]
    sending.open = True
    sending.flush(1.0)
    assert sending.take().requests == [Say(room="lobby", text="hi", key="k1"), join]
    assert number == 1 and sending.requests.busy()


def test_a_request_the_socket_refused_is_sent_again_a_moment_later() -> None:
    sending = Outgoing(Outbox(), RequestTracker())
    sending.open = True
    who = Who(room="lobby")
    sending.track(who, 0.0)
    sending.take()
    sending.not_sent([who], 0.0)
    sending.resend(0.1)
    assert sending.take().requests == []
    sending.resend(1.0)
    assert sending.take().requests == [who]


def test_a_reset_drops_what_was_gathered_for_the_old_sockets() -> None:
    sending = Outgoing(Outbox(), RequestTracker())
    sending.subscribe(b"x")
    sending.send(Who(room="lobby"))
    sending.reset()
    sending.connect_pub("tcp://127.0.0.1:1")
    out = sending.take()
    assert (out.reset, out.subscribe, out.requests) == (True, [], [])
    assert out.connect_pub == "tcp://127.0.0.1:1"
    assert sending.take().reset is False


# --- Inbound -------------------------------------------------------------------------------


def test_every_reply_and_broadcast_type_has_a_route() -> None:
    assert set(_REPLIES) == set(typing.get_args(Reply))
    assert set(_BROADCASTS) == set(typing.get_args(Broadcast))


def test_a_broadcast_of_a_room_being_joined_waits_for_its_joined() -> None:
    session = joined_session()
    session.join("ops")
    session.take_output()
    assert session.on_broadcast(JoinNotice(room="ops", nick="bob", ts=1.0), 1.0) == []
    assert session.on_broadcast(_line(1, "elsewhere"), 1.0) == []  # not ours
    events = session.on_reply(Joined(room="ops", seq=0, members=["me"]), 2.0)
    assert ev.Join(room="ops", nick="bob", ts=1.0) in events


def test_our_acknowledged_lines_count_as_shown_only_once_they_came_back() -> None:
    # In cluster mode the ack of a line comes before its broadcast (which
    # takes a trip through Redis): a front-end leaving right after the ack
    # must wait for it (found by hand: `printf 'hi\n' | chat-client --json`
    # on a cluster sometimes ended without printing its own line).
    rooms, _ = _rooms()
    _in(rooms, "lobby", 4, epoch="e1")
    assert rooms.caught_up()
    rooms.ours_acked("lobby", 5)
    rooms.ours_acked("lobby", 6)
    rooms.ours_acked("elsewhere", 9)  # not a room of ours: never waited for
    assert not rooms.caught_up()
    track = rooms.tracks["lobby"]
    track.line(_line(5))
    assert not rooms.caught_up()
    track.line(_line(6))
    assert rooms.caught_up()
    # a renumbered room (another epoch) does not wait for the old numbering
    rooms.ours_acked("lobby", 50)
    track.renumbered(1, "e2", 1)
    assert rooms.caught_up()
    rooms.ours_acked("lobby", 2)
    assert not rooms.caught_up()
    rooms.parted("lobby")
    assert rooms.caught_up()
