"""client.commands.InOrder: a command waits for the answers to earlier ones
(no sockets: events are fed by hand, time is bounded by short timeouts)."""

from __future__ import annotations

import asyncio

from client import events as ev
from client.commands import InOrder, execute


def run(coroutine: object) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 5))  # type: ignore[arg-type]


def test_each_kind_of_request_is_answered_by_its_reply_or_its_error() -> None:
    order = InOrder()
    order.asked("join", "ops")
    order.asked("part", "dev")
    order.asked("nick", "alice")
    order.asked("history", "ops")
    order.asked("who", "ops")
    order.asked("rooms")
    for unrelated in (
        ev.Joined(room="dev", members=[]),
        ev.Nick(old="bob", new="robert"),
        ev.Who(room="lobby", members=[]),
        ev.Error(code="not_in_room", message="", req="part", room="ops"),
    ):
        order.seen(unrelated)
    assert order.pending == 6
    for answer in (
        ev.Joined(room="ops", members=["alice"]),
        ev.Error(code="not_in_room", message="", req="part", room="dev"),
        ev.Nick(old="alice", new="al"),
        ev.HistoryEnd(room="ops", count=0),
        ev.Who(room="ops", members=["al"]),
        ev.Rooms(rooms=[]),
    ):
        order.seen(answer)
    assert order.pending == 0


def test_a_command_waits_until_the_earlier_answer_comes() -> None:
    async def scenario() -> None:
        order = InOrder()
        order.asked("join", "ops")
        waiting = asyncio.create_task(order.wait(lambda event: None))
        await asyncio.sleep(0)
        assert not waiting.done()
        order.seen(ev.Joined(room="ops", members=[]))
        await waiting

    run(scenario())


def test_an_answer_that_never_comes_is_reported_and_the_next_command_goes_ahead() -> None:
    async def scenario() -> None:
        order = InOrder(timeout=0.05)
        order.asked("who", "ops")
        reported: list[ev.Event] = []
        await order.wait(reported.append)
        assert reported == [
            ev.Error(
                code="no_answer",
                message="the broker did not answer /who within 0.05 s; "
                "carrying on with the next command",
                req="who",
                room="ops",
            )
        ]
        assert order.pending == 0

    run(scenario())


def test_the_end_of_the_session_releases_every_waiting_command() -> None:
    async def scenario() -> None:
        order = InOrder()
        order.asked("part", "ops")
        waiting = asyncio.create_task(order.wait(lambda event: None))
        await asyncio.sleep(0)
        order.close()
        await waiting

    run(scenario())


def test_the_same_room_joined_twice_waits_for_one_answer() -> None:
    order = InOrder()
    order.asked("join", "ops")
    order.asked("join", "ops")
    order.seen(ev.Joined(room="ops", members=[]))
    assert order.pending == 0


def test_topic_and_away_are_answered_by_their_own_events_only() -> None:
    order = InOrder()
    order.asked("topic", "ops")
    order.asked("away", "me")
    for unrelated in (
        ev.Topic(room="lobby", text="x"),
        ev.Away(nick="bob", text="lunch"),
        ev.Away(nick="me", text="lunch", auto=True),
        ev.Error(code="not_in_room", message="", req="topic", room="dev"),
    ):
        order.seen(unrelated)
    assert order.pending == 2
    order.seen(ev.Topic(room="ops", text="plans", nick="me", changed=True))
    order.seen(ev.Away(nick="Me", text="lunch"))
    assert order.pending == 0


class _Client:
    """What ``execute`` uses of an AsyncClient for /topic, /away and /back."""

    room = "ops"
    nick = "me"

    async def topic(self, text: str | None = None, room: str | None = None) -> None:
        pass

    async def away(self, text: str = "") -> None:
        pass


def test_a_command_after_topic_away_or_back_waits_for_their_answers() -> None:
    async def scenario() -> None:
        order = InOrder()
        for line in ("/topic plans", "/topic", "/away lunch", "/back"):
            assert await execute(_Client(), line, order) == []  # type: ignore[arg-type]
        assert order.pending == 4
        waiting = asyncio.create_task(order.wait(lambda event: None))
        for answer in (
            ev.Topic(room="ops", text="plans", nick="me", changed=True),
            ev.Topic(room="ops", text="plans", nick="me"),
            ev.Away(nick="me", text="lunch"),
        ):
            order.seen(answer)
            await asyncio.sleep(0)
            assert not waiting.done()
        order.seen(ev.Away(nick="me", text=""))
        await waiting

    run(scenario())
