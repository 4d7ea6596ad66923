"""What the baseline servers share: their flags, and binding the ROUTER and
PUB pair with the endpoints logged to stderr as ``chat-broker`` logs them
(bench/run.py reads them from there)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TypeVar

import zmq

__all__ = ["bind_pair", "parse_args"]

S = TypeVar("S", bound="zmq.Socket[Any]")


def parse_args(prog: str, description: str, argv: list[str] | None) -> argparse.Namespace:
    """``--router``, ``--pub`` (ephemeral ports of 127.0.0.1 by default) and ``--pub-hwm``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--router", default="tcp://127.0.0.1:*")
    parser.add_argument("--pub", default="tcp://127.0.0.1:*")
    parser.add_argument("--pub-hwm", type=int, default=10_000, help="as chat-broker's default")
    return parser.parse_args(argv)


def bind_pair(ctx: zmq.Context[S], args: argparse.Namespace) -> tuple[S, S]:
    """A ROUTER and a PUB bound where ``args`` say, their endpoints logged."""
    router = ctx.socket(zmq.ROUTER)
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = args.pub_hwm
    router.bind(args.router)
    pub.bind(args.pub)
    for name, sock in (("router", router), ("pub", pub)):
        endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        print(f"{name} bound to {endpoint}", file=sys.stderr, flush=True)
    return router, pub
