"""Testing bots: without a network (:class:`BotHarness`), or running for a
test's ``async with`` block (:func:`serving`) against a real broker, such as
the one :func:`broker.testing.running_broker` runs in the test's own process
(the client library never imports the broker).

::

    from client.testing import BotHarness
    from mybot import bot

    def test_roll() -> None:
        harness = BotHarness(bot)
        [reply] = harness.say_sync("alice", "!roll 2d6")
        assert reply.text.startswith("alice rolled")

See docs/BOTS.md, "Testing a bot".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from client import events as ev
from client.bot import Bot, Sent
from client.session import State

__all__ = ["BotHarness", "Sent", "serving"]

T = TypeVar("T")


class BotHarness:
    """Feeds made-up events through a bot's handlers and records what it says.

    Nothing is sent anywhere: the bot's replies are recorded (split and all,
    but not rate limited) in :attr:`sent`, and each feeding method returns the
    lines that event caused. The ``*_sync`` variants run one event in a fresh
    event loop, for tests that are not async.
    """

    def __init__(self, bot: Bot, *, room: str | None = None) -> None:
        self.bot = bot
        #: The room events happen in unless told otherwise: the bot's first.
        self.room = room or bot.rooms[0]
        #: Every line the bot has sent so far.
        self.sent: list[Sent] = []
        self._seq = itertools.count(1)
        bot._recorder = self.sent.append

    async def feed(self, event: ev.Event) -> list[Sent]:
        """Dispatch any event; returns the lines the bot sent meanwhile."""
        before = len(self.sent)
        await self.bot.dispatch(event)
        return self.sent[before:]

    async def say(
        self,
        nick: str,
        text: str,
        room: str | None = None,
        *,
        history: bool = False,
        action: bool = False,
    ) -> list[Sent]:
        """``nick`` says ``text`` in ``room`` (default :attr:`room`)."""
        seq = next(self._seq)
        return await self.feed(
            ev.Message(
                room=room or self.room,
                nick=nick,
                text=text,
                ts=time.time(),
                id=f"harness-{seq}",
                seq=seq,
                action=action,
                history=history,
            )
        )

    async def private(self, nick: str, text: str) -> list[Sent]:
        """``nick`` sends ``text`` privately to the bot."""
        seq = next(self._seq)
        return await self.feed(
            ev.Private(nick=nick, to=self.bot.nick, text=text, ts=time.time(), id=f"harness-{seq}")
        )

    async def join(self, nick: str, room: str | None = None) -> list[Sent]:
        """``nick`` joins ``room``."""
        return await self.feed(ev.Join(room=room or self.room, nick=nick, ts=time.time()))

    async def leave(self, nick: str, room: str | None = None, reason: str = "exit") -> list[Sent]:
        """``nick`` leaves ``room`` (``reason``: exit, part, timeout...)."""
        return await self.feed(
            ev.Leave(room=room or self.room, nick=nick, reason=reason, ts=time.time())
        )

    def say_sync(
        self, nick: str, text: str, room: str | None = None, **options: bool
    ) -> list[Sent]:
        """:meth:`say` for tests that are not async."""
        return _run(self.say(nick, text, room, **options))

    def private_sync(self, nick: str, text: str) -> list[Sent]:
        """:meth:`private` for tests that are not async."""
        return _run(self.private(nick, text))

    def join_sync(self, nick: str, room: str | None = None) -> list[Sent]:
        """:meth:`join` for tests that are not async."""
        return _run(self.join(nick, room))

    def leave_sync(self, nick: str, room: str | None = None, reason: str = "exit") -> list[Sent]:
        """:meth:`leave` for tests that are not async."""
        return _run(self.leave(nick, room, reason))


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def serving(bot: Bot, timeout: float = 10.0) -> AsyncIterator[Bot]:
    """Run ``bot.serve()`` for the ``async with`` block, once it has joined;
    then stop it and wait until it has left.

    Raises what ``serve`` raised if it could not join, TimeoutError if it did
    not join within ``timeout`` seconds.
    """
    task = asyncio.create_task(bot.serve(), name="bot-under-test")
    try:
        deadline = time.monotonic() + timeout
        while not (bot.client is not None and bot.client.session.state is State.JOINED):
            if task.done():
                task.result()  # raises why it failed
                raise RuntimeError("the bot stopped before joining")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bot did not join within {timeout:g} s")
            await asyncio.sleep(0.01)
        yield bot
    finally:
        bot.stop()
        await asyncio.wait_for(task, timeout)
