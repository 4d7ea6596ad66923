"""Baseline: the smallest Python broker, a ROUTER -> PUB forwarder.

It receives a frame and publishes it under a topic, nothing else: no
decoding, no validation, no state. Its CPU cost per delivery is the floor of
any broker written in Python on pyzmq. It logs where it bound the way
``chat-broker`` does, so bench/run.py starts every server the same way, and
it ends on SIGTERM (the default action).
"""

from __future__ import annotations

import sys

import zmq

from bench.baselines import bind_pair, parse_args

TOPIC = b"room/bench/"


def main(argv: list[str] | None = None) -> int:
    """Bind, log the endpoints to stderr, forward until killed."""
    args = parse_args("bench.forwarder", __doc__.split("\n")[0], argv)
    router, pub = bind_pair(zmq.Context(), args)
    # The cheapest pyzmq idiom (the broker's loop uses the same): frame by frame
    # with int flags; recv_multipart/send_multipart cost microseconds more.
    # The compiled send, as the broker calls it: pyzmq's Socket.send is a
    # Python wrapper costing 0.2 µs per frame more.
    recv, send = router.recv, zmq.backend.Socket.send
    more = int(zmq.SNDMORE)
    while True:
        recv()  # the routing id
        payload = recv()  # the generator sends exactly one frame
        send(pub, TOPIC, more)
        send(pub, payload)


if __name__ == "__main__":
    sys.exit(main())
