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

TOPIC = b"room/bench/"


async def forward(router_endpoint: str, pub_endpoint: str, hwm: int) -> None:
    """Bind, log the endpoints to stderr, forward until cancelled."""
    ctx = zmq.asyncio.Context()
    router = ctx.socket(zmq.ROUTER)
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = hwm
    router.bind(router_endpoint)
    pub.bind(pub_endpoint)
    print(f"router bound to {router.getsockopt_string(zmq.LAST_ENDPOINT)}", file=sys.stderr)
    print(f"pub bound to {pub.getsockopt_string(zmq.LAST_ENDPOINT)}", file=sys.stderr, flush=True)
    more = int(zmq.SNDMORE)
    recv, send = router.recv, pub.send
    while True:
        await recv()  # the routing id
        payload = await recv()
        await send(TOPIC, more)
        await send(payload)


def main(argv: list[str] | None = None) -> int:
    """Entry point; ends on SIGTERM (the default action)."""
    parser = argparse.ArgumentParser(prog="bench.forwarder_asyncio")
    parser.add_argument("--router", default="tcp://127.0.0.1:*")
    parser.add_argument("--pub", default="tcp://127.0.0.1:*")
    parser.add_argument("--pub-hwm", type=int, default=10_000)
    args = parser.parse_args(argv)
    asyncio.run(forward(args.router, args.pub, args.pub_hwm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
