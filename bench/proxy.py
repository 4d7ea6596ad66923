"""Baseline: ``zmq.proxy`` from a ROUTER to a PUB, all in C.

The relay loop runs inside libzmq, so this is the limit of a ZeroMQ relay on
this machine. The PUB topic is the first frame, the sender's routing id, so
subscribers subscribe to everything. Logs its endpoints like ``chat-broker``
and ends on SIGTERM (the default action).
"""

from __future__ import annotations

import argparse
import sys

import zmq


def main(argv: list[str] | None = None) -> int:
    """Bind, log the endpoints to stderr, relay until killed."""
    parser = argparse.ArgumentParser(prog="bench.proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--router", default="tcp://127.0.0.1:*")
    parser.add_argument("--pub", default="tcp://127.0.0.1:*")
    parser.add_argument("--pub-hwm", type=int, default=10_000, help="as chat-broker's default")
    args = parser.parse_args(argv)
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = args.pub_hwm
    router.bind(args.router)
    pub.bind(args.pub)
    print(
        f"router bound to {router.getsockopt_string(zmq.LAST_ENDPOINT)}",
        file=sys.stderr,
        flush=True,
    )
    print(f"pub bound to {pub.getsockopt_string(zmq.LAST_ENDPOINT)}", file=sys.stderr, flush=True)
    zmq.proxy(router, pub)
    return 0


if __name__ == "__main__":
    sys.exit(main())
