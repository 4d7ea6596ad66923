"""``chat-client``: the interactive terminal client, or ``--json`` for scripts."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from typing import Any

from client import events as ev
from client.aio import DEFAULT_SERVER, AsyncClient
from client.commands import InOrder, execute
from client.failover import parse_servers
from client.jsonout import DEFAULT_LIMIT, EventWriter
from protocol import BrokerUnreachable, JoinRefused, ProtocolError, check_endpoint, validate_room
from protocol.keys import KeyFileError, is_z85_key, load_secret, parse_public_key

__all__ = ["build_parser", "curve_options", "main"]

#: Exit statuses (README "JSON mode", docs/CLIENT.md "Exit status").
EXIT_OK = 0
#: No broker answered, or the session ended for a reason other than our leaving.
EXIT_UNREACHABLE = 1
#: Refused: bad options, nickname taken or invalid, authentication failed.
EXIT_REFUSED = 2
#: Some line was not delivered (an ``error`` event for it: ``not_delivered``,
#: or refused by us or the broker).
EXIT_NOT_DELIVERED = 3
#: Events were dropped because stdout was not read (``overflow`` events).
EXIT_OVERFLOW = 4

#: Requests whose errors mean a line of the user's was not delivered.
_LINE_REQUESTS = frozenset({"say", "msg", "me"})


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds (got {text})")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative (got {text})")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The client's command-line options."""
    parser = argparse.ArgumentParser(prog="chat-client", description="Talk through a chat broker.")
    parser.add_argument(
        "--server",
        action="append",
        metavar="ENDPOINT",
        help=f"the broker's router endpoint (default {DEFAULT_SERVER}); repeat it, or "
        "separate endpoints with commas, to name several brokers of one cluster: the "
        "client fails over between them, keeping its nickname and rooms",
    )
    parser.add_argument("--nick", metavar="NAME", help="your nickname (asked for if not given)")
    parser.add_argument(
        "--room", default="lobby", metavar="ROOM", help="the room to start in (default lobby)"
    )
    parser.add_argument(
        "--pub",
        metavar="ENDPOINT",
        help="subscribe here instead of where the broker says (port forwarding)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="give up if no broker answers within this time (default 10)",
    )
    parser.add_argument(
        "--backlog",
        type=_count,
        default=50,
        metavar="N",
        help="lines of history to show on joining a room (default 50)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="scripting mode: commands on stdin, JSON events on stdout",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="line mode: one scrolling stream and a prompt, no full screen "
        "(also with TERM=dumb or when output is not a terminal; for screen readers)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=_positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="--json, at end of input: wait for unacknowledged lines as long as the "
        "broker keeps acknowledging them (paced at its flood limit); give up after "
        "SECONDS without progress (default 30)",
    )
    parser.add_argument(
        "--output-buffer",
        type=_count,
        default=DEFAULT_LIMIT,
        metavar="BYTES",
        help="--json: events that may wait unread on stdout before further ones are "
        f"dropped and counted in an overflow event (default {DEFAULT_LIMIT})",
    )
    parser.add_argument(
        "--no-bell", action="store_true", help="do not ring the bell when you are mentioned"
    )
    parser.add_argument(
        "--server-key",
        metavar="FILE_OR_Z85",
        help="encrypt with CURVE: the broker's public key, as its .key file "
        "or 40 Z85 characters (docs/SECURITY.md)",
    )
    parser.add_argument(
        "--curve-secret",
        metavar="FILE",
        help="with --server-key: our own key_secret file from chat-keygen "
        "(default: a fresh keypair for this run)",
    )
    return parser


def curve_options(args: argparse.Namespace) -> dict[str, Any]:
    """The AsyncClient keyword options for ``--server-key``/``--curve-secret``.

    Raises ValueError with a message for a person: KeyFileError (a ValueError
    too) if a key cannot be read.
    """
    if args.curve_secret and not args.server_key:
        raise ValueError("--curve-secret needs --server-key (the broker's public key)")
    if not args.server_key:
        return {}
    # One reader for keys and key files, shared with the broker (protocol/keys.py);
    # its messages name the key or file, and we name the flag.
    try:
        options: dict[str, Any] = {"server_key": parse_public_key(args.server_key)}
    except KeyFileError as exc:
        raise KeyFileError(f"--server-key: {exc}") from None
    if args.curve_secret:
        try:
            options["client_keys"] = load_secret(args.curve_secret)
        except KeyFileError as exc:
            raise KeyFileError(f"--curve-secret: {exc}") from None
    return options


def _key_values_attached(argv: list[str]) -> list[str]:
    """``--server-key KEY`` as ``--server-key=KEY`` when KEY is a Z85 key.

    argparse takes a value that starts with "-" for an option and refuses the
    flag; one Z85 key in 85 starts so (its alphabet has "-"), and a pasted key
    must work every time. A 40-character Z85 key is never one of our options.
    """
    out: list[str] = []
    position = 0
    while position < len(argv):
        word = argv[position]
        following = argv[position + 1] if position + 1 < len(argv) else ""
        if word == "--server-key" and following.startswith("-") and is_z85_key(following):
            out.append(f"{word}={following}")
            position += 2
            continue
        out.append(word)
        position += 1
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``chat-client`` and ``python -m client``."""
    parser = build_parser()
    args = parser.parse_args(_key_values_attached(sys.argv[1:] if argv is None else argv))
    try:
        args.server = list(parse_servers(args.server or [DEFAULT_SERVER]))
    except ProtocolError as exc:
        parser.error(f"--server: {exc.message}")
    if args.pub is not None:
        try:
            check_endpoint(args.pub, bind=False)
        except ProtocolError as exc:
            parser.error(f"--pub: {exc.message}")
        if len(args.server) > 1:
            # Each broker of a cluster has its own PUB socket, named in its welcome.
            parser.error("--pub cannot be used with several --server endpoints")
    try:
        validate_room(args.room)
    except ProtocolError as exc:
        print(f"chat-client: --room: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        args.curve_options = curve_options(args)
    except ValueError as exc:
        print(f"chat-client: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if args.json:
        return asyncio.run(run_json(args))
    from client.tui import run_interactive

    return asyncio.run(run_interactive(args))


# --- JSON mode ------------------------------------------------------------------


def _read_stdin(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[bytes | None]) -> None:
    # A thread, because stdin may be a pipe, a file or a terminal, and only a
    # blocking read works on all of them. It uses os.read, not sys.stdin.buffer:
    # a daemon thread blocked inside the BufferedReader holds its lock, and the
    # interpreter then aborts at exit (SIGABRT, "could not acquire lock for
    # <stdin> at interpreter shutdown") after /exit or a signal with stdin open.
    def put(item: bytes | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: we are exiting
            loop.call_soon_threadsafe(lines.put_nowait, item)

    pending = b""
    while chunk := os.read(sys.stdin.fileno(), 65536):
        *complete, pending = (pending + chunk).split(b"\n")
        for line in complete:
            put(line + b"\n")
    if pending:
        put(pending)
    put(None)


class _Output:
    """Every event on its way to stdout: counts what the exit status reports
    and tells the command sequencer about answers."""

    def __init__(self, writer: EventWriter, order: InOrder) -> None:
        self.writer = writer
        self.order = order
        self.undelivered = 0

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.Error) and (
            event.code == "not_delivered" or (event.req in _LINE_REQUESTS and event.text)
        ):
            self.undelivered += 1
        self.order.seen(event)
        self.writer.emit(event)


async def run_json(args: argparse.Namespace) -> int:
    """Scripting mode: one JSON object per event on stdout, commands on stdin."""
    writer = EventWriter(sys.stdout.fileno(), getattr(args, "output_buffer", DEFAULT_LIMIT))
    stall = getattr(args, "drain_timeout", 30.0)
    code = EXIT_UNREACHABLE
    try:
        code = await _run_json(args, writer, stall)
    finally:
        written = writer.close(stall)
    if not written and not writer.broken and code == EXIT_OK:
        return EXIT_OVERFLOW  # the reader stopped reading: the last events are lost
    return code


async def _run_json(args: argparse.Namespace, writer: EventWriter, stall: float) -> int:
    if not args.nick:
        writer.emit(
            ev.Error(code="nick_invalid", message="--nick is required with --json", req="hello")
        )
        return EXIT_REFUSED
    client = AsyncClient(
        args.server,
        args.nick,
        args.room,
        pub=args.pub,
        backlog=args.backlog,
        **getattr(args, "curve_options", {}),
    )
    try:
        welcome = await client.connect(timeout=args.connect_timeout)
    except JoinRefused as exc:
        writer.emit(ev.Error(code=exc.code, message=exc.message, req="hello"))
        # `unavailable`: a cluster's broker that cannot reach Redis right now
        # (passing, as an unreachable broker is), not a refusal of ours.
        return EXIT_UNREACHABLE if exc.code == "unavailable" else EXIT_REFUSED
    except BrokerUnreachable as exc:
        writer.emit(ev.Error(code="unreachable", message=str(exc), req="hello"))
        return EXIT_UNREACHABLE
    order = InOrder()
    out = _Output(writer, order)
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes | None] = asyncio.Queue()
    threading.Thread(target=_read_stdin, args=(loop, lines), daemon=True).start()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # Only now: a script that signals us as soon as it sees the welcome gets a
    # clean leave (reason exit), not the default handler killing us silently.
    out(welcome)

    async def print_events() -> None:
        async for event in client:
            out(event)
        order.close()  # nothing more will be answered

    async def read_commands() -> None:
        while True:
            raw = await lines.get()
            if raw is None:
                break
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                out(ev.Error(code="bad_encoding", message="that input line is not UTF-8"))
                continue
            # In order: a command waits for the answers to the earlier ones.
            await order.wait(out)
            result = await execute(client, line, order)
            if isinstance(result, str):  # EXIT
                break
            for event in result:
                out(event)
        # The end of input (or /exit): what was asked is carried out first.
        await order.wait(out)
        await client.drain(stall)

    printer = asyncio.create_task(print_events())
    reader = asyncio.create_task(read_commands())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({reader, stopper, printer}, return_when=asyncio.FIRST_COMPLETED)
    for task in (reader, stopper):
        task.cancel()
    # Not only once the printer is done: the end of input may win the race
    # against the last events of a session the broker already ended.
    ended_by_broker = client.session.close_reason not in (None, "exit")
    # Whatever is still unacknowledged now is reported, one not_delivered each.
    await client.close(settle=0)
    with contextlib.suppress(asyncio.CancelledError):
        await printer
    if out.undelivered:
        return EXIT_NOT_DELIVERED
    if writer.dropped:
        return EXIT_OVERFLOW
    if ended_by_broker:
        # A key refused while reconnecting is a refusal, as at the first join.
        refused = client.session.close_reason == "auth_failed"
        return EXIT_REFUSED if refused else EXIT_UNREACHABLE
    return EXIT_OK
