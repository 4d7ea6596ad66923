"""Where a joined client's memory goes: ZeroMQ's share step by step, and ours.

``python -m bench.memory [--clients 1000]`` prints two tables:

* **ZeroMQ.** A bare ROUTER + XPUB server (``XPUB_VERBOSE``, as the broker's)
  in a child process; its VmRSS growth per client after each step a chat
  client takes (connect the DEALER, connect the SUB, the ``hello`` read, the
  replies written, the room subscription, a unique sync topic and its
  unsubscription, broadcasts past one 256-message queue chunk).
* **The broker's Python state.** ``tracemalloc`` around ``clients`` hellos and
  sync notices in a :class:`~broker.core.BrokerCore`, by source line.

Figures depend on the allocator and the machine; read them as shares.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import time
import tracemalloc

import zmq

from bench.loadgen import rss_kib
from broker.core import BrokerConfig, BrokerCore

#: The server: reads commands on stdin, answers "ok" once done and settled.
_SERVER = r"""
import sys, time, zmq
ctx = zmq.Context()
router, xpub = ctx.socket(zmq.ROUTER), ctx.socket(zmq.XPUB)
xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
xpub.sndhwm = 10_000
print(router.bind_to_random_port("tcp://127.0.0.1"),
      xpub.bind_to_random_port("tcp://127.0.0.1"), flush=True)
ids = []
for line in sys.stdin:
    verb, count = line.split()
    n = int(count)
    if verb == "read":
        for _ in range(n):
            identity, _body = router.recv_multipart()
            if identity not in ids:
                ids.append(identity)
    elif verb == "reply":
        for identity in ids:
            for _ in range(n):
                router.send_multipart([identity, b"r" * 100])
    elif verb == "notices":
        for _ in range(n):
            xpub.recv()
    elif verb == "publish":
        for _ in range(n):
            xpub.send_multipart([b"room/bench/", b"b" * 140])
    time.sleep(0.3)  # let the I/O thread finish writing
    print("ok", flush=True)
"""


def zeromq_steps(clients: int) -> list[tuple[str, float]]:
    """KiB of server VmRSS per client added by each step of a chat client."""
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    ctx = zmq.Context()
    ctx.max_sockets = 2 * clients + 64
    rows: list[tuple[str, float]] = []
    try:
        router_port, pub_port = map(int, server.stdout.readline().split())
        last = rss_kib(server.pid)

        def command(text: str) -> None:
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write(text + "\n")
            server.stdin.flush()
            assert server.stdout.readline().strip() == "ok"

        def step(name: str) -> None:
            nonlocal last
            time.sleep(0.3)
            now = rss_kib(server.pid)
            rows.append((name, (now - last) / clients))
            last = now

        dealers, subs = [], []
        for _ in range(clients):
            dealer = ctx.socket(zmq.DEALER)
            dealer.linger = 0
            dealer.connect(f"tcp://127.0.0.1:{router_port}")
            dealers.append(dealer)
        step("DEALER connected")
        for _ in range(clients):
            sub = ctx.socket(zmq.SUB)
            sub.linger = 0
            sub.rcvhwm = 0
            sub.connect(f"tcp://127.0.0.1:{pub_port}")
            subs.append(sub)
        step("SUB connected")
        for dealer in dealers:
            dealer.send(b'{"type":"hello","v":1,"nick":"someone","rooms":["bench"]}')
        command(f"read {clients}")
        step("hello read (ROUTER decoder, inbound pipe)")
        command("reply 2")
        step("welcome + joined written (ROUTER encoder)")
        for sub in subs:
            sub.subscribe(b"room/bench/")
        command(f"notices {clients}")
        step("room topic subscribed")
        for i, sub in enumerate(subs):
            sub.subscribe(b"sync/%024x/0/" % i)
        command(f"notices {clients}")
        step("a sync topic of its own subscribed")
        for i, sub in enumerate(subs):
            sub.unsubscribe(b"sync/%024x/0/" % i)
        command(f"notices {clients}")
        step("... and unsubscribed")
        command("publish 1")
        step("one broadcast to every SUB")
        command("publish 300")
        step("300 more (a pipe past its first 256-message chunk)")
        for sock in dealers + subs:
            sock.close(0)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(10)
        ctx.term()
    return rows


def python_state(clients: int) -> tuple[float, list[tuple[str, float]]]:
    """Bytes per joined session of the core's own state, and the top lines."""
    core = BrokerCore(BrokerConfig(max_rate=0))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(clients):
        identity = b"\x00" + i.to_bytes(4, "big")
        hello = b'{"type":"hello","v":1,"nick":"c%d","rooms":["bench"]}' % i
        (welcome,) = core.handle(identity, [hello], 1000.0)
        token = welcome.message.session.encode()  # type: ignore[union-attr]
        core.subscribed_all([b"\x01sync/%s/0/" % token], 1000.0)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    lines = after.compare_to(before, "lineno")
    total = sum(stat.size_diff for stat in lines) / clients
    top = [(str(stat.traceback[0]), stat.size_diff / clients) for stat in lines[:10]]
    return total, top


def main(argv: list[str] | None = None) -> int:
    """Print both tables."""
    parser = argparse.ArgumentParser(prog="bench.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args(argv)
    rows = zeromq_steps(args.clients)
    print(f"ZeroMQ server (ROUTER + XPUB), VmRSS growth per client, {args.clients} clients")
    for name, kib in rows:
        print(f"  {name:52} {kib:+7.1f} KiB")
    print(f"  {'total':52} {sum(kib for _, kib in rows):+7.1f} KiB")
    total, top = python_state(args.clients)
    print(f"\nBrokerCore, Python objects per joined session: {total:.0f} bytes")
    for where, size in top:
        print(f"  {where:60} {size:6.0f} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
