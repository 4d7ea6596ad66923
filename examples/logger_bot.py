"""Logger bot: writes every line of its rooms to a file, one JSON object per line.

    python examples/logger_bot.py --server tcp://127.0.0.1:5555 --file chat.jsonl \
        [--nick logger] [--room lobby --room dev]

Each line is the event as ``chat-client --json`` prints it: ``message``,
``join`` and ``leave`` objects with ``type`` first. The file is appended to
and flushed after every line, so ``tail -f`` shows the chat as it happens and
a crash loses nothing already written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import IO

from client import events as ev
from client.bot import Bot, Context


def build_bot(
    server: str, out: IO[bytes], nick: str = "logger", rooms: list[str] | None = None
) -> Bot:
    """The bot, writing to ``out`` (tests drive it with a BotHarness)."""
    bot = Bot(server, nick, rooms or ["lobby"])

    def write(ctx: Context) -> None:
        out.write(ev.encode_event(ctx.event) + b"\n")
        out.flush()

    # One function for all three kinds: the event itself says which it is.
    bot.on_message(write)
    bot.on_join(write)
    bot.on_leave(write)
    return bot


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="Log every line of some rooms as JSON.")
    parser.add_argument(
        "--server",
        required=True,
        metavar="ENDPOINT",
        help="broker router (several brokers of one cluster: comma-separated, to fail over)",
    )
    parser.add_argument("--file", required=True, metavar="PATH", help="the file to append to")
    parser.add_argument("--nick", default="logger", help="the bot's nickname (default logger)")
    parser.add_argument(
        "--room", action="append", metavar="ROOM", help="a room to log (repeatable; default lobby)"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s: %(message)s")
    try:
        out = open(args.file, "ab")  # noqa: SIM115 (closed below, whatever run() does)
    except OSError as exc:
        parser.error(f"--file: cannot open {args.file}: {exc.strerror}")
    with out:
        return build_bot(args.server, out, args.nick, args.room).run()


if __name__ == "__main__":
    sys.exit(main())
