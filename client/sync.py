"""``Client``: the blocking front-end, a thin shell over :class:`AsyncClient`.

It runs an ``AsyncClient`` on a private event loop in a daemon thread, so the
heartbeats keep flowing while your code blocks, and there is only one session
implementation to keep right.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

from client import events as ev
from client.aio import DEFAULT_SERVER, AsyncClient
from client.failover import parse_servers
from protocol import ConnectionClosed, check_endpoint

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """A blocking chat client.

    ::

        with Client("tcp://127.0.0.1:5555", nick="bot") as chat:
            chat.say("hello")
            for event in chat:
                ...
    """

    def __init__(
        self,
        server: str | Sequence[str] = DEFAULT_SERVER,
        nick: str = "",
        room: str = "lobby",
        *,
        rooms: list[str] | None = None,
        pub: str | None = None,
        backlog: int = 50,
        curve: dict[str, bytes] | None = None,
        sub_hwm: int | None = None,
        server_key: bytes | None = None,
        client_keys: tuple[bytes, bytes] | None = None,
    ) -> None:
        """Options as for :class:`AsyncClient` (``server_key`` turns on CURVE;
        ``server`` may name several brokers of one cluster, to fail over).

        Raises ProtocolError (``bad_endpoint``) for an unusable endpoint."""
        parse_servers(server)  # before a thread exists to clean up
        if pub is not None:
            check_endpoint(pub, bind=False)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="chat-client"
        )
        self._thread.start()
        self._async = self._call(
            _make(
                server,
                nick,
                room,
                rooms=rooms,
                pub=pub,
                backlog=backlog,
                curve=curve,
                sub_hwm=sub_hwm,
                server_key=server_key,
                client_keys=client_keys,
            )
        )

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    @property
    def server(self) -> str:
        """The broker's ROUTER endpoint in use now (see AsyncClient.server)."""
        return self._async.server

    @property
    def nick(self) -> str:
        """Our nickname now."""
        return self._async.nick

    @property
    def room(self) -> str | None:
        """The current room."""
        return self._async.room

    @property
    def rooms(self) -> list[str]:
        """The rooms we are in."""
        return self._async.rooms

    def connect(self, nick: str | None = None, timeout: float = 10.0) -> ev.Welcome:
        """Join; raises JoinRefused or BrokerUnreachable (see AsyncClient.connect)."""
        return self._call(self._async.connect(nick, timeout))

    def close(self, timeout: float = 2.0) -> None:
        """Leave and stop the background thread."""
        if not self._thread.is_alive():
            return
        try:
            self._call(self._async.close(timeout))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout + 1)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def say(self, text: str, room: str | None = None) -> str:
        """Send a line; returns its key."""
        return self._call(self._async.say(text, room))

    def action(self, text: str, room: str | None = None) -> str:
        """Send a /me line."""
        return self._call(self._async.action(text, room))

    def private(self, nick: str, text: str, *, action: bool = False) -> str:
        """Send a private line."""
        return self._call(self._async.private(nick, text, action=action))

    def join(self, room: str, *, wait: bool = False) -> str:
        """Join a room (with ``wait``: returns once joined, or raises RequestFailed)."""
        return self._call(self._async.join(room, wait=wait))

    def part(self, room: str | None = None, *, wait: bool = False) -> str:
        """Leave a room (with ``wait``: returns once parted)."""
        return self._call(self._async.part(room, wait=wait))

    def rename(self, nick: str, *, wait: bool = False) -> None:
        """Change nickname (with ``wait``: returns once renamed)."""
        self._call(self._async.rename(nick, wait=wait))

    def who(self, room: str | None = None, *, wait: bool = False) -> list[str] | None:
        """Ask who is in a room (with ``wait``: returns the members)."""
        return self._call(self._async.who(room, wait=wait))

    def list_rooms(self, *, wait: bool = False) -> None:
        """Ask for the room list (with ``wait``: returns once it came)."""
        self._call(self._async.list_rooms(wait=wait))

    def topic(
        self, text: str | None = None, room: str | None = None, *, wait: bool = False
    ) -> str | None:
        """Ask for a room's topic, or set it ("" clears it); with ``wait``:
        returns the topic now in force."""
        return self._call(self._async.topic(text, room, wait=wait))

    def away(self, text: str = "", *, wait: bool = False) -> None:
        """Mark yourself away with ``text``, or back with "" (with ``wait``:
        returns once confirmed)."""
        self._call(self._async.away(text, wait=wait))

    def history(self, count: int = 50, room: str | None = None, *, wait: bool = False) -> None:
        """Fetch older lines of a room (with ``wait``: returns once they came)."""
        self._call(self._async.history(count, room, wait=wait))

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until every line is acknowledged and every
        request answered; returns whether that happened (see AsyncClient.settle)."""
        return self._call(self._async.settle(timeout))

    @property
    def pending(self) -> int:
        """Lines not acknowledged yet (see AsyncClient.pending)."""
        return self._async.pending

    @property
    def queued(self) -> int:
        """Of :attr:`pending`, the lines not on the wire yet."""
        return self._async.queued

    def next_event(self, timeout: float | None = None) -> ev.Event:
        """The next event; TimeoutError after ``timeout`` s, ConnectionClosed at the end."""
        return self._call(self._async.next_event(timeout))

    def __iter__(self) -> Iterator[ev.Event]:
        while True:
            try:
                yield self.next_event()
            except ConnectionClosed:
                return


async def _make(server: str | Sequence[str], nick: str, room: str, **options: Any) -> AsyncClient:
    # Built inside the loop's thread: its asyncio objects belong to that loop.
    return AsyncClient(server, nick, room, **options)
