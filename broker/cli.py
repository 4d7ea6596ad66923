"""``chat-broker``: run the broker from the command line."""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import sys
from types import FrameType

import zmq

from broker import auth
from broker.core import MAX_FRAME_BYTES, BrokerConfig
from broker.server import BrokerServer
from broker.sqlite_history import SqliteHistory, default_history_path

__all__ = ["main"]

DEFAULT_ROUTER = "tcp://127.0.0.1:5555"
DEFAULT_PUB = "tcp://127.0.0.1:5556"


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The broker's command-line options."""
    parser = argparse.ArgumentParser(
        prog="chat-broker", description="Run the chat broker (ROUTER + PUB sockets)."
    )
    parser.add_argument(
        "--router",
        default=DEFAULT_ROUTER,
        metavar="ENDPOINT",
        help=f"where clients send requests (default {DEFAULT_ROUTER})",
    )
    parser.add_argument(
        "--pub",
        default=DEFAULT_PUB,
        metavar="ENDPOINT",
        help=f"where broadcasts are published (default {DEFAULT_PUB})",
    )
    parser.add_argument(
        "--advertise-pub",
        metavar="ENDPOINT",
        help="the PUB endpoint to tell clients, if not the bound one "
        "(behind NAT or port forwarding)",
    )
    parser.add_argument(
        "--client-timeout",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="drop a client silent for this long (default 10)",
    )
    parser.add_argument(
        "--heartbeat",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="how often clients must ping (default: a quarter of --client-timeout, at most 2)",
    )
    parser.add_argument(
        "--max-clients",
        type=_count,
        default=10_000,
        metavar="N",
        help="most clients at once (default 10000)",
    )
    parser.add_argument(
        "--rooms-per-client",
        type=_count,
        default=50,
        metavar="N",
        help="most rooms one client may be in (default 50)",
    )
    parser.add_argument(
        "--max-rate",
        type=float,
        default=5.0,
        metavar="LINES",
        help="flood control: lines per second per client, 0 turns it off (default 5)",
    )
    parser.add_argument(
        "--burst",
        type=_count,
        default=10,
        metavar="N",
        help="flood control: lines a client may send at once (default 10)",
    )
    parser.add_argument(
        "--max-history-rate",
        type=float,
        default=10.0,
        metavar="N",
        help="history, who and room-list requests per second per client, 0 turns "
        "the limit off (default 10; bursts of --rooms-per-client plus N)",
    )
    parser.add_argument(
        "--max-frame",
        type=_count,
        default=MAX_FRAME_BYTES,
        metavar="BYTES",
        help="largest frame a client may send (ZMQ_MAXMSGSIZE); a bigger one "
        f"drops its connection (default {MAX_FRAME_BYTES})",
    )
    parser.add_argument(
        "--curve-secret",
        metavar="FILE",
        help="encrypt and authenticate with CURVE, using this key_secret file "
        "from chat-keygen (clients need the matching .key file)",
    )
    parser.add_argument(
        "--allow-keys",
        metavar="DIR",
        help="with --curve-secret: accept only clients whose public key is a *.key file in DIR",
    )
    parser.add_argument(
        "--nick-keys",
        metavar="FILE",
        help="with --curve-secret: registered nicknames, one 'NICK KEY' per line "
        "(KEY is Z85 or a .key file); only that key may use that nickname",
    )
    parser.add_argument(
        "--history",
        metavar="PATH",
        default=None,
        help=f"SQLite file of room history (default {default_history_path()}; "
        "':memory:' keeps it in memory only)",
    )
    parser.add_argument(
        "--history-lines",
        type=_count,
        default=10_000,
        metavar="N",
        help="lines kept per room (default 10000)",
    )
    parser.add_argument(
        "--history-days",
        type=float,
        default=30.0,
        metavar="DAYS",
        help="drop lines older than this; 0 keeps them forever (default 30)",
    )
    parser.add_argument(
        "--pub-hwm",
        type=_count,
        default=10_000,
        metavar="N",
        help="broadcasts queued per subscriber before it misses some and "
        "repairs them from history (default 10000)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="what to log to stderr (default INFO)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``chat-broker`` and ``python -m broker``."""
    args = build_parser().parse_args(argv)
    # Handlers go in first: a signal during start-up (opening the history,
    # binding) must still end in a clean shutdown, not the default death.
    servers: list[BrokerServer] = []
    stop_requested = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True
        for server in servers:
            server.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    heartbeat = args.heartbeat or min(2.0, args.client_timeout / 4)
    config = BrokerConfig(
        client_timeout=args.client_timeout,
        heartbeat=heartbeat,
        max_clients=args.max_clients,
        rooms_per_client=args.rooms_per_client,
        max_rate=args.max_rate,
        burst=args.burst,
        max_history_rate=args.max_history_rate,
        max_frame=args.max_frame,
    )
    if args.max_rate < 0 or args.max_history_rate < 0:
        print("chat-broker: --max-rate and --max-history-rate cannot be negative", file=sys.stderr)
        return 2
    curve_keys: tuple[bytes, bytes] | None = None
    allowed: frozenset[str] | None = None
    if (args.allow_keys or args.nick_keys) and not args.curve_secret:
        print("chat-broker: --allow-keys and --nick-keys need --curve-secret", file=sys.stderr)
        return 2
    try:
        if args.curve_secret:
            curve_keys = auth.load_secret(args.curve_secret)
        if args.allow_keys:
            allowed = auth.load_allowed_keys(args.allow_keys)
        if args.nick_keys:
            config.nick_keys = auth.load_nick_keys(args.nick_keys)
    except auth.KeyFileError as exc:
        print(f"chat-broker: {exc}", file=sys.stderr)
        return 2
    if args.history_days < 0:
        print("chat-broker: --history-days cannot be negative", file=sys.stderr)
        return 2
    history_path = args.history or default_history_path()
    try:
        history = SqliteHistory(
            history_path, per_room=args.history_lines, max_age=args.history_days * 86400
        )
    except (OSError, sqlite3.Error) as exc:
        print(f"chat-broker: cannot open history {history_path}: {exc}", file=sys.stderr)
        return 1
    try:
        server = BrokerServer(
            args.router,
            args.pub,
            config,
            history=history,
            advertised_pub=args.advertise_pub,
            pub_hwm=args.pub_hwm,
            curve_keys=curve_keys,
            allowed_keys=allowed,
        )
    except zmq.ZMQError as exc:
        history.close()
        print(f"chat-broker: cannot bind: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("broker").info("history in %s", history_path)
    if curve_keys is not None:
        logging.getLogger("broker").info("CURVE public key %s", curve_keys[0].decode())

    servers.append(server)
    if stop_requested:
        server.stop()  # asked to stop before the loop ran: it still says goodbye
    server.serve_forever()
    return 0
