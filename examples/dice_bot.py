"""Dice bot: ``!roll NdM`` rolls N dice of M faces, with a friendly error.

    python examples/dice_bot.py --server tcp://127.0.0.1:5555 [--nick dice] [--room lobby]

N is 1 to 100 (``d6`` means ``1d6``), M is 2 to 1000. Anything else gets a
short explanation instead of silence, so a person learns the syntax.
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import sys

from client.bot import Bot, Context

MAX_DICE = 100
MIN_FACES, MAX_FACES = 2, 1000
_SPEC = re.compile(r"(\d*)d(\d+)", re.IGNORECASE)
USAGE = f"roll dice like this: !roll 2d6 (1 to {MAX_DICE} dice, {MIN_FACES} to {MAX_FACES} faces)"


def roll(spec: str, rng: random.Random) -> str:
    """The outcome of ``spec`` (``NdM``) as a line, or a friendly error."""
    match = _SPEC.fullmatch(spec.strip())
    if match is None:
        return f"I don't understand {spec!r}: {USAGE}" if spec.strip() else USAGE
    dice = int(match.group(1) or "1")
    faces = int(match.group(2))
    if not 1 <= dice <= MAX_DICE:
        return f"{dice} dice is too many or too few: {USAGE}"
    if not MIN_FACES <= faces <= MAX_FACES:
        return f"a die with {faces} faces? {USAGE}"
    values = [rng.randint(1, faces) for _ in range(dice)]
    if dice == 1:
        return f"{dice}d{faces}: {values[0]}"
    return f"{dice}d{faces}: {' + '.join(map(str, values))} = {sum(values)}"


def build_bot(
    server: str, nick: str = "dice", rooms: list[str] | None = None, seed: int | None = None
) -> Bot:
    """The bot, with its handler registered (tests drive it with a BotHarness)."""
    bot = Bot(server, nick, rooms or ["lobby"])
    rng = random.Random(seed)

    @bot.command("roll", help="roll NdM dice, e.g. !roll 2d6")
    def roll_command(ctx: Context) -> str:
        return f"{ctx.nick}: {roll(ctx.args, rng)}"

    return bot


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="Roll dice: !roll NdM.")
    parser.add_argument(
        "--server",
        required=True,
        metavar="ENDPOINT",
        help="broker router (several brokers of one cluster: comma-separated, to fail over)",
    )
    parser.add_argument("--nick", default="dice", help="the bot's nickname (default dice)")
    parser.add_argument(
        "--room", action="append", metavar="ROOM", help="a room to join (repeatable; default lobby)"
    )
    parser.add_argument("--seed", type=int, help="seed the dice (repeatable rolls, for tests)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s: %(message)s")
    return build_bot(args.server, args.nick, args.room, args.seed).run()


if __name__ == "__main__":
    sys.exit(main())
