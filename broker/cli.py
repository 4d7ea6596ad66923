"""``chat-broker``: run the broker from the command line."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
from collections.abc import Callable
from types import FrameType

import zmq

from broker import auth
from broker.core import MAX_FRAME_BYTES, BrokerConfig
from broker.history import StorageError
from broker.server import BrokerServer
from broker.sqlite_history import SqliteHistory, default_history_path
from broker.topics import SqliteTopics
from protocol import ProtocolError, check_endpoint

__all__ = ["main"]

DEFAULT_ROUTER = "tcp://127.0.0.1:5555"
DEFAULT_PUB = "tcp://127.0.0.1:5556"


#: Smallest --max-frame: a line of MAX_TEXT_BYTES (4096) bytes of UTF-8 can
#: take 6 bytes of JSON per byte when every byte is escaped (``\\u0001``), and
#: the rest of a ``say`` (room, key, field names) adds a few hundred more;
#: 32 KiB always holds it, so no valid line is ever dropped as too big.
MIN_FRAME_BYTES = 32 * 1024
#: Largest value of any count: ZeroMQ options (--pub-hwm, --max-frame) are C
#: ints and SQLite integers are 64-bit, so a bigger number would crash later.
MAX_COUNT = 2**31 - 1
#: Longest --client-timeout or --heartbeat: a day.
MAX_SECONDS = 86_400.0
#: Longest --history-days: a century (0 already means forever).
MAX_HISTORY_DAYS = 36_500.0


def _number(text: str, what: str) -> float:
    # float() accepts "nan", "inf" and "1e999"; none of them is a setting.
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r} (not a finite number)")
    return value


def _seconds(text: str) -> float:
    what = f"a number of seconds above 0 and at most {MAX_SECONDS:g}"
    value = _number(text, what)
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _engine_url(text: str) -> str:
    # `--engine "$REDIS_URL"` with the variable unset must not quietly mean
    # SQLite mode; the URL itself is checked when the engine connects.
    if not text.strip():
        raise argparse.ArgumentTypeError("empty URL (expected e.g. redis://HOST:6379/0)")
    return text


def _rate(text: str) -> float:
    what = "a number of 0 or more (0 turns the limit off)"
    value = _number(text, what)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _days(text: str) -> float:
    what = f"a number of days from 0 (keep forever) to {MAX_HISTORY_DAYS:g}"
    value = _number(text, what)
    if not 0 <= value <= MAX_HISTORY_DAYS:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _whole(text: str, least: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not least <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _count(text: str) -> int:
    return _whole(text, 1, f"a whole number from 1 to {MAX_COUNT}")


def _frame_size(text: str) -> int:
    return _whole(
        text,
        MIN_FRAME_BYTES,
        f"a number of bytes from {MIN_FRAME_BYTES} (room for the longest line) to {MAX_COUNT}",
    )


def _bind_endpoint(text: str) -> str:
    try:
        return check_endpoint(text, bind=True)
    except ProtocolError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _connect_endpoint(text: str) -> str:
    try:
        return check_endpoint(text, bind=False)
    except ProtocolError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def build_parser() -> argparse.ArgumentParser:
    """The broker's command-line options."""
    parser = argparse.ArgumentParser(
        prog="chat-broker", description="Run the chat broker (ROUTER + PUB sockets)."
    )
    parser.add_argument(
        "--router",
        default=DEFAULT_ROUTER,
        type=_bind_endpoint,
        metavar="ENDPOINT",
        help=f"where clients send requests (default {DEFAULT_ROUTER})",
    )
    parser.add_argument(
        "--pub",
        default=DEFAULT_PUB,
        type=_bind_endpoint,
        metavar="ENDPOINT",
        help=f"where broadcasts are published (default {DEFAULT_PUB})",
    )
    parser.add_argument(
        "--advertise-pub",
        type=_connect_endpoint,
        metavar="ENDPOINT",
        help="the PUB endpoint to tell clients, if not the bound one "
        "(behind NAT or port forwarding); a host and port they can connect "
        "to (a 0.0.0.0 host means: the host they reached the router on)",
    )
    parser.add_argument(
        "--client-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="drop a client silent for this long (default 10)",
    )
    parser.add_argument(
        "--heartbeat",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="how often clients must ping; at most half of --client-timeout, so "
        "one late ping does not drop a client (default: a quarter of "
        "--client-timeout, at most 2; with --engine also at most a fifth of "
        "--engine-lease but not below 1, so a client of a dead broker moves before "
        "the lease ends)",
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
        type=_rate,
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
        type=_rate,
        default=10.0,
        metavar="N",
        help="history, who and room-list requests per second per client, 0 turns "
        "the limit off (default 10; bursts of --rooms-per-client plus N)",
    )
    parser.add_argument(
        "--max-frame",
        type=_frame_size,
        default=MAX_FRAME_BYTES,
        metavar="BYTES",
        help="largest frame a client may send (ZMQ_MAXMSGSIZE); a bigger one "
        f"drops its connection (default {MAX_FRAME_BYTES}; at least "
        f"{MIN_FRAME_BYTES}, so a line of 4096 bytes always fits even with "
        "every byte JSON-escaped)",
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
        type=_days,
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
        "--engine",
        type=_engine_url,
        metavar="URL",
        help="cluster mode: share rooms, history and nicknames with every broker "
        "given the same Redis 7 URL (redis://HOST:PORT/DB, rediss://..., unix:///PATH, "
        "redis+sentinel://HOST:PORT,.../SERVICE); Redis must have maxmemory-policy "
        "noeviction (checked at start) and should have appendonly yes; the --history "
        "options are then unused (docs/CLUSTER.md)",
    )
    parser.add_argument(
        "--engine-lease",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="cluster mode: a broker silent this long is dead: the others announce "
        "its members' leaves and free their nicknames, and it may not write any "
        "more (default 5)",
    )
    parser.add_argument(
        "--engine-replicas",
        type=int,
        default=0,
        metavar="N",
        help="cluster mode: acknowledge a line only once N Redis replicas have it "
        "(WAIT), so a failover cannot lose it; lines not confirmed in time are "
        "stored but not acknowledged, and the client's resend asks again (default 0)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="what to log to stderr (default INFO)",
    )
    return parser


def _heartbeat(args: argparse.Namespace) -> float:
    """The ping interval the welcome announces.

    In cluster mode a client of a broker killed -9 takes three heartbeats to
    notice and then resumes its session on another broker; the reaper drops
    that session once the dead broker's lease ran out (less one heartbeat of
    the broker's own, up to a second). The client must win, or the others see
    it leave and join again: a fifth of the lease. Not below a second, though:
    a broker cut off from Redis stalls for an engine timeout (2 s) now and
    then, and its clients must not take that for its death."""
    heartbeat: float | None = args.heartbeat
    if heartbeat is None:
        heartbeat = min(2.0, args.client_timeout / 4)
        if args.engine is not None:
            heartbeat = min(heartbeat, max(1.0, args.engine_lease / 5))
    if args.engine is not None and 3 * heartbeat >= args.engine_lease - 1:
        logging.getLogger("broker").warning(
            "heartbeat %g s: clients notice a dead broker after %g s, not before its "
            "--engine-lease %g runs out; they will start afresh on another broker "
            "(others see them leave and join) instead of moving",
            heartbeat,
            3 * heartbeat,
            args.engine_lease,
        )
    return heartbeat


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``chat-broker`` and ``python -m broker``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.heartbeat is not None and args.heartbeat > args.client_timeout / 2:
        # A client pings once per heartbeat; with less than two pings per
        # timeout, one late ping (a busy machine, a lost packet) drops it.
        parser.error(
            f"--heartbeat {args.heartbeat:g} is more than half of --client-timeout "
            f"{args.client_timeout:g}: clients would be dropped between heartbeats"
        )
    if (args.allow_keys or args.nick_keys) and not args.curve_secret:
        parser.error("--allow-keys and --nick-keys need --curve-secret")
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
    heartbeat = _heartbeat(args)
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
    curve_keys: tuple[bytes, bytes] | None = None
    allowed: frozenset[str] | None = None
    try:
        if args.curve_secret:
            curve_keys = auth.load_secret(args.curve_secret)
        if args.allow_keys:
            allowed = auth.load_allowed_keys(args.allow_keys)
            if not allowed:
                logging.getLogger("broker").warning(
                    "--allow-keys %s holds no *.key file: no client will be able to connect",
                    args.allow_keys,
                )
        if args.nick_keys:
            config.nick_keys = auth.load_nick_keys(args.nick_keys)
    except auth.KeyFileError as exc:
        print(f"chat-broker: {exc}", file=sys.stderr)
        return 2
    if args.engine:
        return _serve_cluster(args, config, curve_keys, allowed, servers, lambda: stop_requested)
    history_path = args.history or default_history_path()
    try:
        # The default location is ours to create; an explicit path's directory
        # must exist (a typo should not create directories, as root anywhere).
        history = SqliteHistory(
            history_path,
            per_room=args.history_lines,
            max_age=args.history_days * 86400,
            create_dir=args.history is None,
        )
        # Topics live in the same file, so they survive a restart with the lines.
        topics = SqliteTopics(history_path)
    except (OSError, StorageError) as exc:
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
            topics=topics,
        )
    except zmq.ZMQError as exc:
        history.close()
        topics.close()
        print(f"chat-broker: cannot bind: {exc}", file=sys.stderr)
        return 1
    except StorageError as exc:  # reading the stored keys found a damaged page
        history.close()
        print(f"chat-broker: cannot open history {history_path}: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("broker").info("history in %s", history_path)
    if curve_keys is not None:
        logging.getLogger("broker").info("CURVE public key %s", curve_keys[0].decode())

    servers.append(server)
    if stop_requested:
        server.stop()  # asked to stop before the loop ran: it still says goodbye
    server.serve_forever()
    return 0


def _serve_cluster(
    args: argparse.Namespace,
    config: BrokerConfig,
    curve_keys: tuple[bytes, bytes] | None,
    allowed: frozenset[str] | None,
    servers: list[BrokerServer],
    stop_requested: Callable[[], bool],
) -> int:
    """Cluster mode (docs/CLUSTER.md): the engine instead of a history file."""
    # Imported here: SQLite mode never loads redis.
    from broker.cluster import ClusterShell
    from broker.engine import EngineError, EngineSettings, RedisEngine

    log = logging.getLogger("broker")
    if args.history not in (None, ":memory:"):
        log.warning(
            "--history %s is unused in cluster mode: history is in the engine", args.history
        )
    try:
        settings = EngineSettings(
            broker_ttl=round(args.engine_lease * 1000), replicas=args.engine_replicas
        )
        engine = RedisEngine.connect(args.engine, settings)
    except ValueError as exc:  # a malformed URL
        print(f"chat-broker: --engine: {exc}", file=sys.stderr)
        return 2
    except EngineError as exc:
        print(f"chat-broker: {exc}", file=sys.stderr)
        return 1
    try:
        server = BrokerServer(
            args.router,
            args.pub,
            config,
            advertised_pub=args.advertise_pub,
            pub_hwm=args.pub_hwm,
            curve_keys=curve_keys,
            allowed_keys=allowed,
            cluster=ClusterShell(engine),
        )
    except zmq.ZMQError as exc:
        engine.close()
        print(f"chat-broker: cannot bind: {exc}", file=sys.stderr)
        return 1
    except EngineError as exc:
        engine.close()
        print(f"chat-broker: {exc}", file=sys.stderr)
        return 1
    servers.append(server)
    if stop_requested():
        server.stop()
    server.serve_forever()
    return 0
