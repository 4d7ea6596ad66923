"""client/requests.py: every request answered, resent or failed."""

from __future__ import annotations

from client import events as ev
from client.requests import NO_ANSWER, Purpose, RequestTracker
from protocol import History, Join, ListRooms, Who


def test_answers_match_the_oldest_request_of_their_kind_and_room() -> None:
    tracker = RequestTracker()
    lobby = tracker.add(Who(room="lobby"), 0.0)
    ops = tracker.add(Who(room="ops"), 0.0)
    answered = tracker.answered("who", "ops")
    assert answered is not None and answered.id == ops
    answered = tracker.answered("who", "lobby")
    assert answered is not None and answered.id == lobby
    assert tracker.answered("who", "lobby") is None


def test_user_requests_complete_repairs_do_not() -> None:
    tracker = RequestTracker()
    rooms = tracker.add(ListRooms(), 0.0)
    tracker.add(History(room="lobby", after=1, before=5), 0.0, Purpose.REPAIR)
    event = ev.Rooms(rooms=[])
    tracker.complete(tracker.answered("rooms", None), event)
    tracker.complete(tracker.answered("history", "lobby"), ev.HistoryEnd(room="lobby", count=0))
    assert tracker.take_completions() == [(rooms, event)]
    assert tracker.take_completions() == []


def test_a_lost_connection_resends_user_requests_and_drops_repairs() -> None:
    tracker = RequestTracker()
    tracker.add(Who(room="lobby"), 0.0)
    tracker.add(Join(room="ops", sync=1), 0.0)
    tracker.add(History(room="lobby", after=1, before=5), 0.0, Purpose.REPAIR)
    tracker.lost()
    assert tracker.joins_waiting() == ["ops"]
    assert tracker.resend(10.0) == [Who(room="lobby")]  # joins go in the hello
    assert tracker.resend(10.0) == []


def test_a_request_the_socket_refused_is_resent() -> None:
    tracker = RequestTracker()
    who = Who(room="lobby")
    tracker.add(who, 0.0)
    tracker.not_sent(who, 0.25)
    assert tracker.resend(0.1) == []
    assert tracker.resend(0.5) == [who]


def test_unanswered_user_requests_fail_after_the_timeout() -> None:
    tracker = RequestTracker(timeout=10.0)
    who = tracker.add(Who(room="lobby"), 0.0)
    tracker.add(History(room="lobby", after=1, before=5), 0.0, Purpose.REPAIR)
    assert tracker.expired(5.0) == []
    (failed,) = tracker.expired(11.0)
    assert isinstance(failed, ev.Error) and failed.code == NO_ANSWER and failed.req == "who"
    assert tracker.take_completions() == [(who, failed)]
    assert len(tracker) == 0  # the repair went too, silently (its room asks again)


def test_giving_up_fails_every_user_request() -> None:
    tracker = RequestTracker()
    tracker.add(Who(room="lobby"), 0.0)
    (failed,) = tracker.give_up("closed")
    assert isinstance(failed, ev.Error) and failed.code == "not_delivered"
    assert not tracker.busy()


def test_a_queued_request_waits_for_its_answer_only_once_sent() -> None:
    tracker = RequestTracker(timeout=10.0)
    join = Join(room="ops", sync=1)
    tracker.add(join, 0.0, queued=True)  # behind many paced lines
    assert tracker.expired(100.0) == []
    tracker.sent(join, 100.0)
    assert tracker.expired(105.0) == []
    (failed,) = tracker.expired(111.0)
    assert isinstance(failed, ev.Error) and failed.req == "join"
