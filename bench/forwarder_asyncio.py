"""The forwarder of bench/forwarder.py on asyncio (``zmq.asyncio``).

Not a baseline of the issue: it exists to measure what an asyncio event loop
costs per message compared with a plain blocking/poll loop, the question of
which loop the broker should use (docs/PERFORMANCE.md). Run it with
``python -m bench.run --targets forwarder forwarder-asyncio``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import zmq
import zmq.asyncio

from bench.baselines import bind_pair, parse_args

TOPIC = b"room/bench/"


async def forward(args: argparse.Namespace) -> None:
    """Bind, log the endpoints to stderr, forward until cancelled."""
    router, pub = bind_pair(zmq.asyncio.Context(), args)
    more = int(zmq.SNDMORE)
    recv, send = router.recv, pub.send
    while True:
        await recv()  # the routing id
        payload = await recv()
        await send(TOPIC, more)
        await send(payload)


def main(argv: list[str] | None = None) -> int:
    """Entry point; ends on SIGTERM (the default action)."""
    asyncio.run(forward(parse_args("bench.forwarder_asyncio", __doc__.split("\n")[0], argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
