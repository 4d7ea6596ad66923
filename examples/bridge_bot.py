"""Bridge bot: relays lines between two rooms, marking where they came from.

    python examples/bridge_bot.py --server tcp://127.0.0.1:5555 --rooms lobby dev [--nick bridge]

A line ``hi`` by alice in ``lobby`` appears in ``dev`` as ``[lobby] alice: hi``
(an action as ``[lobby] * alice waves``), and the other way round.

Why it cannot loop: the bot never sees its own lines (the Bot default), so a
relayed line is never relayed back. It also leaves alone lines that already
carry a ``[room] `` mark of one of its rooms, so two bridges between the same
rooms do not bounce lines between each other either.
"""

from __future__ import annotations

import argparse
import logging
import sys

from client import events as ev
from client.bot import Bot, Context


def build_bot(server: str, rooms: list[str], nick: str = "bridge") -> Bot:
    """The bot for exactly two ``rooms`` (tests drive it with a BotHarness)."""
    bot = Bot(server, nick, rooms)
    first, second = bot.rooms  # canonical names (lower case, no '#')
    other = {first: second, second: first}
    marks = tuple(f"[{room}] " for room in other)

    @bot.on_message
    def relay(ctx: Context) -> None:
        assert ctx.room is not None and isinstance(ctx.event, ev.Message)
        if ctx.text.startswith(marks):
            return  # relayed by another bridge: do not send it back
        if ctx.event.action:
            line = f"[{ctx.room}] * {ctx.nick} {ctx.text}"
        else:
            line = f"[{ctx.room}] {ctx.nick}: {ctx.text}"
        bot.send(line, other[ctx.room])

    return bot


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="Relay lines between two rooms.")
    parser.add_argument(
        "--server",
        required=True,
        metavar="ENDPOINT",
        help="broker router (several brokers of one cluster: comma-separated, to fail over)",
    )
    parser.add_argument(
        "--rooms", nargs=2, required=True, metavar=("A", "B"), help="the two rooms to bridge"
    )
    parser.add_argument("--nick", default="bridge", help="the bot's nickname (default bridge)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s: %(message)s")
    if len({room.lower().lstrip("#") for room in args.rooms}) != 2:
        parser.error("--rooms needs two different rooms")
    return build_bot(args.server, args.rooms, args.nick).run()


if __name__ == "__main__":
    sys.exit(main())
