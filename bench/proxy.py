"""Baseline: ``zmq.proxy`` from a ROUTER to a PUB, all in C.

The relay loop runs inside libzmq, so this is the limit of a ZeroMQ relay on
this machine. The PUB topic is the first frame, the sender's routing id, so
subscribers subscribe to everything. Logs its endpoints like ``chat-broker``
and ends on SIGTERM (the default action).
"""

from __future__ import annotations

import sys

import zmq

from bench.baselines import bind_pair, parse_args


def main(argv: list[str] | None = None) -> int:
    """Bind, log the endpoints to stderr, relay until killed."""
    args = parse_args("bench.proxy", __doc__.split("\n")[0], argv)
    router, pub = bind_pair(zmq.Context(), args)
    zmq.proxy(router, pub)
    return 0


if __name__ == "__main__":
    sys.exit(main())
