"""Echo bot: answers ``!echo TEXT`` with ``TEXT`` in the same room.

    python examples/echo_bot.py --server tcp://127.0.0.1:5555 [--nick echo] [--room lobby]

The smallest useful bot: one command handler that returns its reply.
"""

from __future__ import annotations

import argparse
import logging
import sys

from client.bot import Bot, Context


def build_bot(server: str, nick: str = "echo", rooms: list[str] | None = None) -> Bot:
    """The bot, with its handler registered (tests drive it with a BotHarness)."""
    bot = Bot(server, nick, rooms or ["lobby"])

    @bot.command("echo", help="say TEXT back")
    def echo(ctx: Context) -> str:
        # Returning a string is the same as ctx.reply(string).
        return ctx.args or f"usage: {bot.prefix}echo TEXT"

    return bot


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="Answer !echo TEXT with TEXT.")
    parser.add_argument(
        "--server",
        required=True,
        metavar="ENDPOINT",
        help="broker router (several brokers of one cluster: comma-separated, to fail over)",
    )
    parser.add_argument("--nick", default="echo", help="the bot's nickname (default echo)")
    parser.add_argument(
        "--room", action="append", metavar="ROOM", help="a room to join (repeatable; default lobby)"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s: %(message)s")
    return build_bot(args.server, args.nick, args.room).run()


if __name__ == "__main__":
    sys.exit(main())
