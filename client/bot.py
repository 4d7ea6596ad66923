"""``Bot``: a small framework for chat bots on :class:`AsyncClient` (docs/BOTS.md).

::

    bot = Bot("tcp://127.0.0.1:5555", nick="dicebot", rooms=["lobby"])

    @bot.command("roll")
    def roll(ctx: Context) -> str:
        return f"{ctx.nick} rolled {random.randint(1, 6)}"

    bot.run()  # until SIGINT or SIGTERM

What it does for its author:

- dispatches ``!name args`` lines to command handlers and every other event to
  the ``on_message``, ``on_join``, ``on_leave``, ``on_private`` and
  ``on_mention`` handlers (plain functions or coroutines);
- ignores its own lines and replayed history unless told otherwise, so two bots
  cannot answer each other forever and a restart does not re-run old commands;
- queues what it says in order and hands it to the session core, which paces
  every line under the broker's flood control (the ``limits`` of the welcome);
  an optional ``max_rate`` caps the bot's lines per second further; long
  replies are split at the protocol's text limit on UTF-8 character
  boundaries, at white space if it can;
- survives the broker going away: the session core reconnects and rejoins on
  its own, and if the broker forgets the session for good the bot joins afresh;
- logs through ``logging.getLogger("client.bot")``; a handler that raises is
  logged and the bot carries on;
- ``run()`` stops cleanly on SIGINT and SIGTERM: it sends what is queued and
  leaves (others see the ``exit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import re
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from client import events as ev
from client.aio import DEFAULT_SERVER, AsyncClient
from client.pacing import RateLimiter
from protocol import (
    MAX_TEXT_BYTES,
    BrokerUnreachable,
    ClientError,
    ConnectionClosed,
    ErrorCode,
    JoinRefused,
    Limits,
    ProtocolError,
    nick_key,
    validate_nick,
    validate_room,
)

__all__ = [
    "Bot",
    "Context",
    "Handler",
    "RateLimiter",
    "Sent",
    "split_text",
]

log = logging.getLogger("client.bot")

#: What a handler is given (a :class:`Context`) and may return: nothing, a
#: string (sent as the reply), or an awaitable of either.
Handler = Callable[["Context"], object]
H = TypeVar("H", bound=Handler)

#: Delays between attempts to join afresh once a session is over for good.
_REJOIN_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
#: How long a shutdown may spend sending what is still queued.
_FLUSH_TIMEOUT = 3.0

# A mention is the nickname as a word: not inside a longer name.
_WORD = r"[A-Za-z0-9_]"


# --- sending helpers (pure, tested without a network) ---------------------------


def split_text(text: str, limit: int = MAX_TEXT_BYTES) -> list[str]:
    """Cut ``text`` into lines of at most ``limit`` bytes of UTF-8 each.

    Cuts fall on character boundaries (never inside a multi-byte character),
    at the last white space before the limit when there is one (that one
    white-space character is dropped); otherwise as late as possible. Pieces
    that would be empty or only white space are left out, since the protocol
    refuses them. Raises ProtocolError(bad_encoding) for text that is not
    valid Unicode (lone surrogates).
    """
    if limit < 4:
        raise ValueError("limit must leave room for one UTF-8 character (4 bytes)")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(ErrorCode.BAD_ENCODING, "text is not valid Unicode") from None
    pieces: list[str] = []
    while len(data) > limit:
        # The longest prefix that fits, minus a partly cut character at its end.
        head = data[:limit].decode("utf-8", "ignore")
        # One byte more: white space just past the limit is a fine place to cut.
        window = data[: limit + 1].decode("utf-8", "ignore")
        cut = max(window.rfind(c) for c in (" ", "\n", "\t"))
        if cut > 0:
            piece, rest = window[:cut], data[len(window[: cut + 1].encode("utf-8")) :]
        else:
            piece, rest = head, data[len(head.encode("utf-8")) :]
        pieces.append(piece)
        data = rest
    pieces.append(data.decode("utf-8"))
    return [p for p in pieces if p and not p.isspace()]


# --- what handlers see ----------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """A line the bot sent: to a ``room``, or privately ``to`` a nickname."""

    kind: Literal["room", "private"]
    target: str
    text: str


@dataclass
class Context:
    """What a handler gets: the event, who and where, and ways to answer.

    ``room`` is None for private lines. For commands, ``command`` is the
    command's name (lower case) and ``args`` the rest of the line, stripped;
    ``argv`` splits it at white space. :meth:`reply` and :meth:`reply_private`
    return a future that resolves once the line is handed to the session core,
    which sends it as soon as the broker's flood limits allow (await
    it if you need to; a plain function may ignore it).
    """

    bot: Bot
    event: ev.Message | ev.Private | ev.Join | ev.Leave | ev.Topic
    nick: str
    room: str | None
    text: str = ""
    command: str | None = None
    args: str = ""

    @property
    def argv(self) -> list[str]:
        """The arguments split at white space."""
        return self.args.split()

    @property
    def private(self) -> bool:
        """True when the line came privately."""
        return self.room is None

    def reply(self, text: str) -> asyncio.Future[None]:
        """Answer where the event happened: the room, or privately to the sender."""
        if self.room is None:
            return self.bot.send_private(self.nick, text)
        return self.bot.send(text, self.room)

    def reply_private(self, text: str) -> asyncio.Future[None]:
        """Answer the sender privately."""
        return self.bot.send_private(self.nick, text)


@dataclass
class _Line:
    kind: Literal["room", "private"]
    target: str
    text: str
    future: asyncio.Future[None]
    last: bool


@dataclass
class _Handlers:
    commands: dict[str, Handler] = field(default_factory=dict)
    help: dict[str, str] = field(default_factory=dict)
    message: list[Handler] = field(default_factory=list)
    join: list[Handler] = field(default_factory=list)
    leave: list[Handler] = field(default_factory=list)
    private: list[Handler] = field(default_factory=list)
    mention: list[Handler] = field(default_factory=list)
    topic: list[Handler] = field(default_factory=list)


def _retrieve(future: asyncio.Future[None]) -> None:
    # Nobody has to await a reply's future: mark a failure as seen (it is logged).
    if not future.cancelled():
        future.exception()


# --- the bot ------------------------------------------------------------------


class Bot:
    """A chat bot; see the module docstring and docs/BOTS.md.

    Arguments: the broker's router ``server`` endpoint (or several brokers of
    one cluster, a list or comma-separated: the bot fails over between them,
    keeping its nick and rooms), the bot's ``nick`` and
    the ``rooms`` it joins (default ``lobby``); ``prefix`` starts commands;
    ``answer_self`` and ``answer_history`` make it see its own lines and
    replayed history (both off by default); ``backlog`` is how many stored
    lines to replay on joining (default none); ``max_rate`` caps its lines per
    second below the broker's flood limits, which the session core already
    keeps to. ``pub`` and ``curve`` are passed to :class:`AsyncClient`.
    Raises ProtocolError for an invalid nickname or room name, ValueError for
    a ``max_rate`` that is not a positive number.
    """

    def __init__(
        self,
        server: str | Sequence[str] = DEFAULT_SERVER,
        nick: str = "bot",
        rooms: list[str] | None = None,
        *,
        prefix: str = "!",
        answer_self: bool = False,
        answer_history: bool = False,
        backlog: int = 0,
        max_rate: float | None = None,
        pub: str | None = None,
        curve: dict[str, bytes] | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if not prefix:
            raise ValueError("the command prefix cannot be empty")
        if max_rate is not None and not (max_rate > 0 and math.isfinite(max_rate)):
            raise ValueError(
                f"max_rate must be a positive number of lines per second, not {max_rate}"
            )
        self.server = server
        self._nick = validate_nick(nick)
        self._rooms = list(dict.fromkeys(validate_room(r) for r in (rooms or ["lobby"])))
        self.prefix = prefix
        self.answer_self = answer_self
        self.answer_history = answer_history
        self.backlog = backlog
        self.max_rate = max_rate
        self.pub = pub
        self.curve = curve
        self.connect_timeout = connect_timeout
        #: The protocol's text limit (from the welcome once connected).
        self.text_limit = MAX_TEXT_BYTES
        #: The bot's own cap (``max_rate`` lines a second, no bursts), or None.
        #: The broker's flood limits are the session core's business: it paces
        #: every line under them, so a second bucket here would only add delay.
        self.limiter = RateLimiter(max_rate, 1, margin=1.0) if max_rate is not None else None
        self._handlers = _Handlers()
        self._client: AsyncClient | None = None
        self._limits: Limits | None = None
        self._outbox: asyncio.Queue[_Line] | None = None
        self._connected: asyncio.Event | None = None
        self._stop_event: asyncio.Event | None = None
        self._stopping = False
        # Set by client.testing.BotHarness: lines go there at once, unsent.
        self._recorder: Callable[[Sent], None] | None = None

    # --- registering handlers ---------------------------------------------------

    def command(self, name: str, *, help: str = "") -> Callable[[H], H]:
        """Decorator: call the function for ``<prefix>name ...`` lines.

        ``help`` is a one-line description, listed by :meth:`help_text`.
        """
        key = name.lower()
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"a command name is one word, not {name!r}")

        def register(handler: H) -> H:
            self._handlers.commands[key] = handler
            self._handlers.help[key] = help
            return handler

        return register

    def on_message(self, handler: H) -> H:
        """Decorator: call the function for every line in the bot's rooms."""
        self._handlers.message.append(handler)
        return handler

    def on_join(self, handler: H) -> H:
        """Decorator: call the function when someone joins one of the rooms."""
        self._handlers.join.append(handler)
        return handler

    def on_leave(self, handler: H) -> H:
        """Decorator: call the function when someone leaves one of the rooms."""
        self._handlers.leave.append(handler)
        return handler

    def on_private(self, handler: H) -> H:
        """Decorator: call the function for every private line to the bot."""
        self._handlers.private.append(handler)
        return handler

    def on_mention(self, handler: H) -> H:
        """Decorator: call the function for room lines that name the bot."""
        self._handlers.mention.append(handler)
        return handler

    def on_topic(self, handler: H) -> H:
        """Decorator: call the function when someone changes the topic of one
        of the rooms (``ctx.text`` is the new topic, "" when cleared)."""
        self._handlers.topic.append(handler)
        return handler

    async def set_topic(self, text: str, room: str | None = None) -> None:
        """Set the topic of ``room`` (default: the bot's first room); "" clears it."""
        client = self._client
        if client is None:
            raise ConnectionClosed("the bot is not connected")
        await client.topic(text, room or (self.rooms[0] if self.rooms else None))

    async def set_away(self, text: str = "") -> None:
        """Mark the bot away with ``text`` (people writing to it privately get
        it back once), or back with ""."""
        client = self._client
        if client is None:
            raise ConnectionClosed("the bot is not connected")
        await client.away(text)

    def help_text(self) -> str:
        """One line listing the commands, e.g. for a ``help`` command."""
        return "commands: " + ", ".join(
            f"{self.prefix}{name}" + (f" ({text})" if text else "")
            for name, text in sorted(self._handlers.help.items())
        )

    # --- state ---------------------------------------------------------------

    @property
    def nick(self) -> str:
        """The bot's nickname now."""
        return self._client.nick if self._client is not None else self._nick

    @property
    def rooms(self) -> list[str]:
        """The rooms the bot is in (or will join)."""
        if self._client is not None and self._client.rooms:
            return self._client.rooms
        return list(self._rooms)

    @property
    def client(self) -> AsyncClient | None:
        """The underlying client while connected (for joins, who, history...)."""
        return self._client

    # --- sending ---------------------------------------------------------------

    def send(self, text: str, room: str | None = None) -> asyncio.Future[None]:
        """Queue ``text`` for ``room`` (default: the first room); long text is
        split. Returns a future resolved once the last piece is handed to the
        session core, which paces it under the broker's flood limits (or
        failed with the ProtocolError or ClientError that stopped it)."""
        target = room if room is not None else self.rooms[0]
        return self._queue("room", target, text)

    def send_private(self, nick: str, text: str) -> asyncio.Future[None]:
        """Queue a private line to ``nick``; see :meth:`send`."""
        return self._queue("private", nick, text)

    def _queue(
        self, kind: Literal["room", "private"], target: str, text: str
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        try:
            pieces = split_text(text, self.text_limit)
        except ProtocolError as exc:
            log.warning("not sending %r: %s", text[:60], exc.message)
            future.set_exception(exc)
            return future
        if not pieces:
            log.warning("not sending an empty line")
            future.set_exception(ProtocolError(ErrorCode.TEXT_EMPTY, "a line cannot be empty"))
            return future
        if self._recorder is not None:
            for piece in pieces:
                self._recorder(Sent(kind, target, piece))
            future.set_result(None)
            return future
        outbox = self._ensure_outbox()
        for i, piece in enumerate(pieces):
            outbox.put_nowait(_Line(kind, target, piece, future, last=i == len(pieces) - 1))
        return future

    def _ensure_outbox(self) -> asyncio.Queue[_Line]:
        if self._outbox is None:
            self._outbox = asyncio.Queue()
        return self._outbox

    async def _sender(self) -> None:
        """Hand queued lines to the session one by one (it paces them under the
        broker's limits), no faster than ``max_rate`` if there is one."""
        outbox = self._ensure_outbox()
        assert self._connected is not None
        while True:
            line = await outbox.get()
            try:
                if line.future.done():
                    continue  # an earlier piece of this reply failed
                await self._connected.wait()
                if self.limiter is not None:
                    delay = self.limiter.reserve(time.monotonic())
                    if delay > 0:
                        log.debug("max_rate: waiting %.2f s", delay)
                        await asyncio.sleep(delay)
                await self._transmit(line)
            except (ProtocolError, ClientError) as exc:
                log.warning("could not send %r to %s: %s", line.text[:60], line.target, exc)
                if not line.future.done():
                    line.future.set_exception(exc)
            else:
                if line.last and not line.future.done():
                    line.future.set_result(None)
            finally:
                outbox.task_done()

    async def _transmit(self, line: _Line) -> None:
        client = self._client
        if client is None:
            raise ConnectionClosed("not connected")
        if line.kind == "room":
            await client.say(line.text, line.target)
        else:
            await client.private(line.target, line.text)

    # --- dispatching ---------------------------------------------------------------

    def _is_me(self, nick: str) -> bool:
        return nick_key(nick) == nick_key(self.nick)

    def _mentions_me(self, text: str) -> bool:
        pattern = rf"(?<!{_WORD}){re.escape(self.nick)}(?!{_WORD})"
        return re.search(pattern, text, re.IGNORECASE) is not None

    async def dispatch(self, event: ev.Event) -> None:
        """Run the handlers an event calls for (the harness calls this too).

        Handler exceptions are logged, never raised.
        """
        if isinstance(event, ev.Message):
            if self._is_me(event.nick) and not self.answer_self:
                return
            if event.history and not self.answer_history:
                return
            ctx = Context(self, event, event.nick, event.room, event.text)
            await self._run_all(self._handlers.message, ctx, "on_message")
            await self._run_command(ctx)
            if not self._is_me(event.nick) and self._mentions_me(event.text):
                await self._run_all(self._handlers.mention, ctx, "on_mention")
        elif isinstance(event, ev.Private):
            if self._is_me(event.nick) and not self.answer_self:
                return  # our own copy of a line we sent
            ctx = Context(self, event, event.nick, None, event.text)
            await self._run_all(self._handlers.private, ctx, "on_private")
            await self._run_command(ctx)
        elif isinstance(event, ev.Join):
            ctx = Context(self, event, event.nick, event.room)
            await self._run_all(self._handlers.join, ctx, "on_join")
        elif isinstance(event, ev.Leave):
            ctx = Context(self, event, event.nick, event.room)
            await self._run_all(self._handlers.leave, ctx, "on_leave")
        elif isinstance(event, ev.Topic) and event.changed:
            ctx = Context(self, event, event.nick, event.room, event.text)
            await self._run_all(self._handlers.topic, ctx, "on_topic")
        elif isinstance(event, ev.Connection):
            if event.state == "auth_failed":
                log.warning("connection auth_failed: %s", event.message)
            else:
                log.info("connection %s %s", event.state, event.endpoint)
            # Hold the queue while reconnecting: a line's future then says when
            # the line reached a live session, and if the session ends for good
            # the lines still queued here go to the next one.
            if self._connected is not None:
                if event.state == "reconnected":
                    self._adopt_session_limits()
                    self._connected.set()
                else:
                    self._connected.clear()
        elif isinstance(event, ev.Error):
            log.warning("broker error %s: %s", event.code, event.message)
        elif isinstance(event, ev.Shutdown):
            log.warning("the broker is shutting down (%s); waiting for it", event.reason)
        elif isinstance(event, ev.Missed):
            log.info("%d lines of %s were lost", event.count, event.room)

    async def _run_command(self, ctx: Context) -> None:
        if not ctx.text.startswith(self.prefix):
            return
        words = ctx.text[len(self.prefix) :].split(None, 1)
        if not words:
            return
        name = words[0].lower()
        handler = self._handlers.commands.get(name)
        if handler is None:
            log.debug("no command %r", name)
            return
        ctx.command = name
        ctx.args = words[1].strip() if len(words) > 1 else ""
        await self._call(handler, ctx, f"command {name!r}")

    async def _run_all(self, handlers: list[Handler], ctx: Context, what: str) -> None:
        for handler in handlers:
            await self._call(handler, ctx, what)

    async def _call(self, handler: Handler, ctx: Context, what: str) -> None:
        try:
            result = handler(ctx)
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, str) and result:
                ctx.reply(result)  # returning a string is a shorthand for reply()
        except Exception:
            name = getattr(handler, "__qualname__", repr(handler))
            log.exception("%s handler %s failed on %r from %s", what, name, ctx.text, ctx.nick)

    # --- running -----------------------------------------------------------------

    def _adopt_session_limits(self) -> None:
        # Every welcome, a restarted broker's included, may bring other limits.
        limits = self._client.session.limits if self._client is not None else None
        if limits is not None and limits is not self._limits:
            self._limits = limits
            self._adopt_limits(limits)

    def _adopt_limits(self, limits: Limits) -> None:
        # Only the text limit matters here; the session paces under the rest.
        self.text_limit = min(MAX_TEXT_BYTES, limits.text_bytes) or MAX_TEXT_BYTES
        log.debug(
            "limits: %s lines/s, burst %s, text %d bytes",
            limits.rate,
            limits.burst,
            self.text_limit,
        )

    async def _open(self) -> AsyncClient:
        client = AsyncClient(
            self.server,
            self._nick,
            rooms=self.rooms,
            pub=self.pub,
            backlog=self.backlog,
            curve=self.curve,
        )
        welcome = await client.connect(timeout=self.connect_timeout)
        self._client = client
        self._adopt_session_limits()
        self._nick = welcome.nick
        log.info("joined %s as %s", ", ".join(welcome.rooms), welcome.nick)
        return client

    async def _reopen(self) -> AsyncClient | None:
        """Join afresh after the session ended for good; None once stopping."""
        attempt = 0
        assert self._stop_event is not None
        while not self._stopping:
            delay = _REJOIN_BACKOFF[min(attempt, len(_REJOIN_BACKOFF) - 1)]
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), delay)
            if self._stopping:
                return None
            try:
                return await self._open()
            except (BrokerUnreachable, JoinRefused) as exc:
                log.warning("could not join again (%s); retrying", exc)
        return None

    async def serve(self) -> None:
        """Connect, then handle events until :meth:`stop`.

        Raises BrokerUnreachable or JoinRefused if the first connection fails.
        """
        self._stop_event = asyncio.Event()
        if self._stopping:  # stop() came first
            self._stop_event.set()
        self._connected = asyncio.Event()
        sender = asyncio.create_task(self._sender(), name="bot-sender")
        try:
            client: AsyncClient | None = await self._open()
            while client is not None:
                self._connected.set()
                await self._pump(client)
                self._connected.clear()
                if self._stopping:
                    break
                log.warning(
                    "session over (%s); joining again", client.session.close_reason or "closed"
                )
                self._rooms = client.rooms or self._rooms
                await client.close()
                self._client = None
                client = await self._reopen()
        finally:
            await self._shut(sender)

    async def _pump(self, client: AsyncClient) -> None:
        assert self._stop_event is not None
        stopper = asyncio.create_task(self._stop_event.wait())
        try:
            while True:
                getter = asyncio.create_task(client.next_event())
                done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                        await getter
                    return
                try:
                    event = getter.result()
                except ConnectionClosed:
                    return
                await self.dispatch(event)
        finally:
            stopper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopper

    async def _shut(self, sender: asyncio.Task[None]) -> None:
        """Send what is queued (for a while), then leave."""
        client = self._client
        outbox = self._outbox
        if client is not None and outbox is not None and self._connected is not None:
            self._connected.set()  # let the queue go out, or fail fast
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(outbox.join(), _FLUSH_TIMEOUT)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        if client is not None:
            await client.close()
            log.info("left the chat")
        self._client = None

    def stop(self) -> None:
        """Ask :meth:`serve` to finish: send what is queued, say goodbye, return.

        Safe to call from a signal handler installed with ``loop.add_signal_handler``.
        """
        self._stopping = True
        if self._stop_event is not None:
            self._stop_event.set()

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        for signum in signals:
            loop.add_signal_handler(signum, self.stop)
        try:
            await self.serve()
        except (BrokerUnreachable, JoinRefused) as exc:
            log.error("could not join: %s", exc)
            return 1
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
        return 0

    def run(self) -> int:
        """Run the bot until SIGINT or SIGTERM; returns an exit status (0, or 1
        when the first connection failed). Blocks; for asyncio programs use
        :meth:`serve` and :meth:`stop`."""
        return asyncio.run(self._main())
