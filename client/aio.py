"""``AsyncClient``: the asyncio front-end of the session core.

One pump task owns both sockets: it polls them, feeds the core, runs its timer
and carries out what the core asks. User calls only change the core and flush
its output. Sockets are never read from two tasks (a cancelled ``recv`` can
lose a message), and are closed with linger 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import ParamSpec, TypeVar, cast

import zmq
import zmq.asyncio

from client import events as ev
from client.handshake import HandshakeWatch
from client.session import ClientSession, State
from protocol import (
    BrokerUnreachable,
    ConnectionClosed,
    JoinRefused,
    ProtocolError,
    Request,
    RequestFailed,
    check_endpoint,
    decode_broadcast,
    decode_reply,
    encode,
    unpack,
)

__all__ = ["DEFAULT_SERVER", "AsyncClient"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

DEFAULT_SERVER = "tcp://127.0.0.1:5555"
#: How often the pump wakes to let the core send heartbeats, at most.
_TICK = 0.1
#: Longest wait, when leaving, for our acknowledged lines to come back as
#: broadcasts (a lost one is repaired from history within two heartbeats).
CATCH_UP = 5.0


class AsyncClient:
    """A chat client for asyncio programs.

    ::

        async with AsyncClient("tcp://127.0.0.1:5555", nick="bot") as chat:
            await chat.say("hello")
            async for event in chat:
                ...

    ``connect`` raises :class:`JoinRefused` (nickname taken or invalid...) or
    :class:`BrokerUnreachable`; after ``close`` iteration ends.
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
        """``server_key`` (the broker's Z85 public key) turns on CURVE encryption;
        ``client_keys`` (public, secret; Z85) is our keypair, a fresh one if
        not given. ``curve`` sets raw socket options (``{"CURVE_SERVERKEY": ...}``).

        ``server`` may name several brokers of one cluster (a list, or one
        comma-separated string): the client talks to the first, and when its
        broker is lost resumes the session on the next, round robin (a
        ``connection`` event names the endpoint).

        Raises ProtocolError (``bad_endpoint``) for an unusable endpoint."""
        # Checked here (by the session): libzmq would only fail at connect,
        # deep in the pump.
        if pub is not None:
            check_endpoint(pub, bind=False)
        self.session = ClientSession(
            nick, rooms or [room], server=server, pub_override=pub, backlog=backlog
        )
        self._curve = dict(curve or {})
        if server_key is not None:
            public, secret = client_keys or zmq.curve_keypair()
            self._curve.update(
                CURVE_SERVERKEY=server_key, CURVE_PUBLICKEY=public, CURVE_SECRETKEY=secret
            )
        self._sub_hwm = sub_hwm
        self._ctx = zmq.asyncio.Context()
        self._dealer: zmq.asyncio.Socket | None = None
        self._sub: zmq.asyncio.Socket | None = None
        self._events: asyncio.Queue[ev.Event | None] = asyncio.Queue()
        self._pump_task: asyncio.Task[None] | None = None
        self._join_waiter: asyncio.Future[ev.Welcome] | None = None
        #: Watches each DEALER's handshake, from before it connects until it
        #: is closed (client/handshake.py): a refused key is told, not silence.
        self._watch = HandshakeWatch(self._handshake_refused, dropped=self._link_dropped)
        self._closed = asyncio.Event()
        # Set each time the pump has handled input: settle() waits on it.
        self._progress = asyncio.Event()
        self._fatal: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        # Request id -> the future a caller of join(..., wait=True) awaits.
        self._answers: dict[int, asyncio.Future[ev.Event]] = {}

    # --- life cycle --------------------------------------------------------

    @property
    def server(self) -> str:
        """The broker's ROUTER endpoint in use now."""
        return self.session.server

    @property
    def servers(self) -> tuple[str, ...]:
        """Every ROUTER endpoint given (brokers of one cluster)."""
        return self.session.link.endpoints.all

    @property
    def nick(self) -> str:
        """Our nickname now."""
        return self.session.nick

    @property
    def room(self) -> str | None:
        """The current room (where :meth:`say` sends by default)."""
        return self.session.current

    @property
    def rooms(self) -> list[str]:
        """The rooms we are in."""
        return self.session.rooms

    async def connect(self, nick: str | None = None, timeout: float = 10.0) -> ev.Welcome:
        """Join with ``nick`` (or the one given at construction).

        May be called again after a :class:`JoinRefused`, with another nickname.
        """
        if nick is not None:
            self.session.nick = nick
        loop = asyncio.get_running_loop()
        self._join_waiter = loop.create_future()
        try:
            self.session.hello(time.time(), nick)
        except ProtocolError as exc:
            raise JoinRefused(exc.code, exc.message) from None
        if self._dealer is None:
            self._open_sockets()  # watched before it connects (_open_sockets)
        self._flush()
        if self._pump_task is None:
            self._pump_task = asyncio.create_task(self._pump(), name="chat-client-pump")
        try:
            return await asyncio.wait_for(asyncio.shield(self._join_waiter), timeout)
        except TimeoutError:
            await self._shut(reason="unreachable")
            raise BrokerUnreachable(
                f"no answer from a broker at {', '.join(self.servers)} within {timeout:g} s"
            ) from None
        except JoinRefused as exc:
            if exc.code == "auth_failed":
                await self._shut(reason="auth_failed")
            raise
        except BrokerUnreachable:
            await self._shut(reason="unreachable")
            raise
        finally:
            self._join_waiter = None

    async def settle(self, timeout: float) -> bool:
        """Wait until every line sent so far is acknowledged (paced and held
        ones included) and every request answered (see ``ClientSession.busy``),
        for at most ``timeout`` seconds. Returns whether it settled; what is
        still pending is in :attr:`pending`."""
        deadline = time.monotonic() + timeout
        while self.session.busy and not self._closed.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), left)
        return not self.session.busy

    @property
    def pending(self) -> int:
        """Lines not acknowledged yet: queued under the flood limit, held for a
        join or a reconnect, or sent and waiting for their ``ack``."""
        return self.session.unacked

    @property
    def queued(self) -> int:
        """Of :attr:`pending`, the lines not on the wire yet."""
        return self.session.queued

    async def drain(self, stall: float) -> bool:
        """Wait until every line is acknowledged and every request answered,
        for as long as that makes progress: give up after ``stall`` seconds in
        which no line was acknowledged (plus the spacing of the broker's flood
        limit, so a paced queue of any length drains). Returns whether
        everything was acknowledged."""
        session = self.session
        limits = session.limits
        # A paced line may not go out sooner than the broker's bucket allows.
        spacing = 1 / limits.rate if limits is not None and limits.rate > 0 else 0.0
        left = session.unacked
        deadline = time.monotonic() + stall + spacing
        while session.busy and session.state in (State.JOINED, State.RECONNECTING):
            now = time.monotonic()
            if session.unacked < left:
                left = session.unacked
                deadline = now + stall + spacing
            if now >= deadline:
                return False
            await self.settle(min(0.5, deadline - now))
        # Our own acknowledged lines still on their way back (a gap repair
        # fetches any the broadcast lost): show them before leaving.
        shown_by = time.monotonic() + min(stall, CATCH_UP)
        while not session.caught_up and session.state is State.JOINED:
            if time.monotonic() >= shown_by:
                break
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), 0.1)
        return not session.busy

    async def close(self, timeout: float = 2.0, *, settle: float = 5.0) -> None:
        """Leave (others see ``exit``) and release the sockets.

        Lines still unacknowledged (e.g. typed just before the end of input, or
        waiting for a room being joined) get up to ``settle`` seconds to be
        delivered first; any left then become ``error`` events with code
        ``not_delivered``, so none is dropped silently.
        """
        if (
            self.session.state in (State.JOINED, State.RECONNECTING)
            and self.session.busy
            and not await self.settle(settle)
        ):
            self._deliver(self.session.undelivered("not delivered: the chat was closed first"))
        if self.session.state in (State.JOINED, State.RECONNECTING, State.JOINING):
            self.session.leave()
            self._flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), timeout)
        await self._shut(reason="exit")

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- operations ----------------------------------------------------------

    async def say(self, text: str, room: str | None = None) -> str:
        """Send a line to ``room`` (default: the current room); returns its key."""
        return self._do(self.session.say, text, room)

    async def action(self, text: str, room: str | None = None) -> str:
        """Send a ``/me`` line."""
        return self._do(lambda: self.session.say(text, room, action=True))

    async def private(self, nick: str, text: str, *, action: bool = False) -> str:
        """Send a private line to ``nick``."""
        return self._do(lambda: self.session.private(nick, text, action=action))

    async def join(self, room: str, *, wait: bool = False) -> str:
        """Join a room; a ``joined`` (or ``error``) event follows. With ``wait``,
        returns once joined, or raises RequestFailed."""
        name = self._do(self.session.join, room)
        await self._answer(wait)
        return name

    async def part(self, room: str | None = None, *, wait: bool = False) -> str:
        """Leave a room (default: the current one); a ``parted`` event follows.
        With ``wait``, returns once parted, or raises RequestFailed."""
        name = self._do(self.session.part, room)
        await self._answer(wait)
        return name

    async def rename(self, nick: str, *, wait: bool = False) -> None:
        """Change nickname; a ``nick`` (or ``error``) event follows. With
        ``wait``, returns once renamed, or raises RequestFailed."""
        self._do(self.session.rename, nick)
        await self._answer(wait)

    async def who(self, room: str | None = None, *, wait: bool = False) -> list[str] | None:
        """Ask who is in a room; a ``who`` event follows. With ``wait``, returns
        the members, or raises RequestFailed."""
        self._do(self.session.who, room)
        answer = await self._answer(wait)
        return answer.members if isinstance(answer, ev.Who) else None

    async def list_rooms(self, *, wait: bool = False) -> None:
        """Ask for the room list; a ``rooms`` event follows (with ``wait``: has
        come, or RequestFailed is raised)."""
        self._do(self.session.list_rooms)
        await self._answer(wait)

    async def topic(
        self, text: str | None = None, room: str | None = None, *, wait: bool = False
    ) -> str | None:
        """Ask for a room's topic, or set it (``""`` clears); a ``topic`` event
        follows. With ``wait``, returns the topic now in force, or raises
        RequestFailed."""
        self._do(self.session.topic, text, room)
        answer = await self._answer(wait)
        return answer.text if isinstance(answer, ev.Topic) else None

    async def away(self, text: str = "", *, wait: bool = False) -> None:
        """Mark yourself away with ``text``, or back with ""; an ``away`` event
        follows. With ``wait``, returns once the broker confirmed it, or raises
        RequestFailed."""
        self._do(self.session.away, text)
        await self._answer(wait)

    async def history(
        self, count: int = 50, room: str | None = None, *, wait: bool = False
    ) -> None:
        """Fetch older lines of a room (``message`` events with ``history``,
        then ``history_end``). With ``wait``, returns once they are all queued
        as events, or raises RequestFailed."""
        self._do(self.session.fetch_history, count, room)
        await self._answer(wait)

    async def _answer(self, wait: bool) -> ev.Event | None:
        """The answer to the request the latest operation made, if ``wait``."""
        request = self.session.last_request
        if not wait or request is None:
            return None
        # Answers come only from the pump, so none can have come since the
        # operation returned (no await in between).
        future: asyncio.Future[ev.Event] = asyncio.get_running_loop().create_future()
        self._answers[request] = future
        try:
            answer = await future
        finally:
            self._answers.pop(request, None)
        if isinstance(answer, ev.Error):
            raise RequestFailed(answer.code, answer.message)
        return answer

    # --- events ----------------------------------------------------------------

    async def next_event(self, timeout: float | None = None) -> ev.Event:
        """The next event; raises ConnectionClosed once the session is over,
        TimeoutError if none comes in ``timeout`` seconds."""
        if self._events.empty() and self._closed.is_set():
            raise ConnectionClosed(self.session.close_reason or "exit")
        item = await asyncio.wait_for(self._events.get(), timeout)
        if item is None:
            self._events.put_nowait(None)  # keep telling later callers
            raise ConnectionClosed(self.session.close_reason or "exit")
        return item

    def __aiter__(self) -> AsyncIterator[ev.Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ev.Event]:
        while True:
            try:
                yield await self.next_event()
            except ConnectionClosed:
                return

    # --- the pump ----------------------------------------------------------------

    def _do(self, operation: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._closed.is_set():
            raise ConnectionClosed(self.session.close_reason or "exit")
        self.session.last_request = None
        self.session.advance(time.time())
        result = operation(*args, **kwargs)
        self._flush()
        return result

    def _open_sockets(self) -> None:
        dealer = self._ctx.socket(zmq.DEALER)
        sub = self._ctx.socket(zmq.SUB)
        for sock in (dealer, sub):
            sock.linger = 0
            for option, value in self._curve.items():
                sock.setsockopt(getattr(zmq, option), value)
        if self._sub_hwm is not None:
            # How many broadcasts may wait unread; past it ZeroMQ drops and the
            # session repairs from history.
            sub.rcvhwm = self._sub_hwm
        dealer.ipv6 = _ipv6(self.server)
        # A refusal by this endpoint, whichever of several it is, is
        # auth_failed, not silence (client/handshake.py).
        self._watch.watch(dealer, self.server)
        dealer.connect(self.server)
        self._dealer, self._sub = dealer, sub

    def _close_sockets(self) -> None:
        if self._dealer is not None:
            self._watch.forget(self._dealer)
        for sock in (self._dealer, self._sub):
            if sock is not None:
                sock.close(linger=0)
        self._dealer = self._sub = None

    def _flush(self) -> None:
        out = self.session.take_output()
        if out.reset:
            self._close_sockets()
            self._open_sockets()
            self._wake.set()
        assert self._dealer is not None and self._sub is not None
        if out.connect_pub is not None:
            try:
                self._sub.ipv6 = _ipv6(out.connect_pub)
                self._sub.connect(check_endpoint(out.connect_pub, bind=False))
            except (ProtocolError, zmq.ZMQError) as exc:
                self._unusable_pub(out.connect_pub, exc)
        for subscribe, topic in out.subscribe:
            self._sub.setsockopt(zmq.SUBSCRIBE if subscribe else zmq.UNSUBSCRIBE, topic)
        requests = out.requests
        for i, request in enumerate(requests):
            try:
                sent = cast(
                    "asyncio.Future[object]", self._dealer.send(encode(request), zmq.NOBLOCK)
                )
            except zmq.Again:
                refused = True
            else:
                # zmq.asyncio reports a full queue (Again) through the future,
                # not as an exception (done at once for NOBLOCK): read every
                # result, so none goes unretrieved and nothing is dropped.
                if sent.done():
                    refused = sent.cancelled() or sent.exception() is not None
                else:
                    sent.add_done_callback(functools.partial(self._sent, request))
                    refused = False
            if refused:
                # The queue is full: this request and the ones after it wait,
                # in order, and go again from the next turn of the pump.
                self.session.not_sent(requests[i:], time.time())
                break
        self._resolve()

    def _sent(self, request: Request, sent: asyncio.Future[object]) -> None:
        # A send that completed later: a full queue (Again) or a socket closed
        # under it (a reset). Either way, send it again.
        if sent.cancelled() or sent.exception() is not None:
            self.session.not_sent([request], time.time())

    def _resolve(self) -> None:
        """Hand the answers of requests to whoever waits for them."""
        for request, answer in self.session.take_completions():
            future = self._answers.pop(request, None)
            if future is not None and not future.done():
                future.set_result(answer)

    def _unusable_pub(self, pub: str, exc: ProtocolError | zmq.ZMQError) -> None:
        why = exc.message if isinstance(exc, ProtocolError) else str(exc)
        message = (
            f"cannot subscribe to the broker's broadcasts at {pub!r} ({why}); "
            "if the broker is behind NAT or port forwarding, give the right endpoint with --pub"
        )
        waiter = self._join_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(BrokerUnreachable(message))
            return
        # A restarted broker advertising a bad endpoint: nothing more can work.
        self._deliver([ev.Error(code="bad_endpoint", message=message)])
        self._fatal = asyncio.ensure_future(self._shut(reason="bad_endpoint"))

    def _handshake_refused(self, server: str, message: str) -> None:
        """A DEALER's security handshake with ``server`` failed (client/handshake.py)."""
        waiter = self._join_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(JoinRefused("auth_failed", message))
            return
        # Reconnecting: the session tells the user and tries the other
        # brokers, or gives up (then the pump ends, reporting what is left).
        self._deliver(self.session.handshake_refused(server, message, time.time()))
        self._progress.set()

    def _link_dropped(self, server: str) -> None:
        """The DEALER's established connection to ``server`` closed
        (client/handshake.py): the session loses the broker now, and the
        pump's next turn (within 0.1 s) sends the first try."""
        self._deliver(self.session.link_dropped(time.time()))
        self._progress.set()

    def _deliver(self, events: list[ev.Event]) -> None:
        waiter = self._join_waiter
        for event in events:
            if waiter is not None and not waiter.done():
                if isinstance(event, ev.Welcome):
                    waiter.set_result(event)
                    continue
                if isinstance(event, ev.Error) and event.req == "hello":
                    waiter.set_exception(JoinRefused(event.code, event.message))
                    continue
            self._events.put_nowait(event)

    def _session_closed(self) -> bool:
        # A method, not an inline test: the state changes under the loop.
        return self.session.state is State.CLOSED

    async def _pump(self) -> None:
        session = self.session
        try:
            while session.state is not State.CLOSED:
                dealer, sub = self._dealer, self._sub
                if dealer is None or sub is None:
                    break
                poller = zmq.asyncio.Poller()
                poller.register(dealer, zmq.POLLIN)
                poller.register(sub, zmq.POLLIN)
                self._wake.clear()
                while dealer is self._dealer and not self._session_closed():
                    ready = dict(await poller.poll(_TICK * 1000))
                    now = time.time()
                    events: list[ev.Event] = []
                    if dealer in ready:
                        events += self._drain(dealer, now, private=True)
                    if sub in ready and sub is self._sub:
                        events += self._drain(sub, now, private=False)
                    events += session.tick(now)
                    if self._dealer is not None:
                        self._flush()
                    self._deliver(events)
                    self._progress.set()
        finally:
            if self.session.busy:
                # Ended for good (refused on reconnect, closed): every line and
                # request left is reported, none dropped silently.
                reason = self.session.close_reason or "closed"
                self._deliver(
                    self.session.undelivered(f"not delivered: the session ended ({reason})")
                )
            for future in self._answers.values():
                if not future.done():
                    future.set_exception(ConnectionClosed(self.session.close_reason or "exit"))
                    future.exception()  # retrieved: its awaiter may be gone
            self._closed.set()
            self._events.put_nowait(None)

    def _drain(self, sock: zmq.asyncio.Socket, now: float, *, private: bool) -> list[ev.Event]:
        events: list[ev.Event] = []
        session = self.session
        while True:
            try:
                # zmq.asyncio completes a NOBLOCK receive at once (or raises Again).
                pending = sock.recv_multipart(zmq.NOBLOCK)
                frames = cast("asyncio.Future[list[bytes]]", pending).result()
            except zmq.Again:
                return events
            try:
                if len(frames) != (1 if private else 2):
                    (decode_reply if private else decode_broadcast)(frames)  # says what is wrong
                # A batch (PROTOCOL.md §3) is several messages in one frame.
                bodies = unpack(frames[-1])
            except ProtocolError as exc:
                events.append(ev.Error(code=exc.code, message=f"from the broker: {exc.message}"))
                continue
            for body in bodies:
                try:
                    if private:
                        events += session.on_reply(decode_reply([body]), now)
                    else:
                        events += session.on_broadcast(decode_broadcast([frames[0], body]), now)
                except ProtocolError as exc:
                    events.append(
                        ev.Error(code=exc.code, message=f"from the broker: {exc.message}")
                    )

    async def _shut(self, reason: str) -> None:
        self.session.closed_by_front_end(reason)
        waiter = self._join_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionClosed(reason))
            # Whoever awaits it still gets the exception; if nobody does (a
            # connect that already gave up), asyncio must not log it as lost.
            waiter.exception()
        if self._pump_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
            self._pump_task = None
        # The monitor sockets must be closed, or the context never terminates.
        await self._watch.stop()
        self._closed.set()
        self._close_sockets()
        self._ctx.term()


def _ipv6(endpoint: str) -> bool:
    """Whether ``endpoint`` names an IPv6 address ("tcp://[::1]:5555",
    docs/PROTOCOL.md §1): libzmq connects to one only with ZMQ_IPV6 set, and
    it is left off otherwise so that a host name keeps resolving to IPv4 as
    the broker's default endpoints expect."""
    return "://[" in endpoint
