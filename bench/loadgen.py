"""The load generator: every simulated client driven from one poll loop.

Run by bench/run.py as its own process (pinned to a core of its own), it opens
a DEALER and a SUB socket per client and speaks the wire format directly, with
requests built from byte templates, so that the generator stays as cheap as
possible and the server's cost is what the figures show.

Two modes:

* ``chat``: our broker. Each client sends ``hello``, subscribes to the room
  topic and then its ``sync/<session>/0/`` topic, waits for ``joined`` and
  unsubscribes the sync topic (as client/session.py does).
  Senders send ``say`` requests with an idempotency key (so the broker
  acknowledges them) whose text is ``<sender>:<counter>:<send time>``.
  Every client pings at the heartbeat interval once joined.
* ``raw``: the baselines (bench/forwarder.py, bench/proxy.py), which know no
  protocol. A DEALER sends ``<sender>:<counter>:<send time>:`` padded to
  ``--payload-bytes`` (default 140, the size of the broker's broadcast of such
  a line) as one frame, and every SUB, subscribed to everything, gets it back
  from the relay. "Joined"
  means that a SUB has received one of the probe frames (``P``) that client 0
  sends until every SUB has heard one.

With ``--sequential`` the clients join one after another instead of all at
once (LoadGen.join_sequential), and the server's CPU per join is reported
near 10, 100 and 1000 members.

Every client receives every line (its own included), so the generator checks
loss, duplication and order per (sender, receiver) pair from the counters,
and measures latency from the send time (one process, one monotonic clock).
A sender keeps at most ``--window`` lines in flight (sent, not yet back on its
own SUB) so that no queue overflows and any loss is the server's fault.

The server's CPU time (utime + stime from /proc/PID/stat) and resident memory
(VmRSS from /proc/PID/status) are read by this process at the edges of the
measured window. The result is one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import zmq

ROOM = "bench"
ROOM_TOPIC = b"room/bench/"
PROBE = b"P"
#: A line whose text is no ``<sender>:<counter>:<time>``: not tallied, counted.
PRICE = b'{"type":"say","room":"bench","text":"price"}'
#: How often each joined chat client pings (the broker's default heartbeat is 2 s).
PING_EVERY = 1.5
#: Room sizes at which a sequential join reports the server's CPU per join.
JOIN_MARKS = (10, 100, 1000)
#: Seconds of idling measured at each mark of a sequential join.
IDLE_WINDOW = 1.0
#: Probes a relay fans out on their own at each mark, to price one frame.
PRICED_FRAMES = 5
#: How long the socket queues must stay quiet before "settled".
QUIET = 0.3
#: Seconds between reads of every DEALER once joined (Loadgen.full_poller).
DEALER_EVERY = 0.005
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class _Body(msgspec.Struct):
    """The few fields of a broker message the generator looks at (others skipped)."""

    type: str
    text: str = ""
    session: str = ""
    code: str = ""
    message: str = ""


class _Broadcast(msgspec.Struct, gc=False):
    """What the generator reads of a broadcast: its type and text."""

    type: str
    text: str = ""


_decode = msgspec.json.Decoder(_Body).decode
_decode_batch = msgspec.json.Decoder(list[_Body]).decode
_decode_broadcasts = msgspec.json.Decoder(list[_Broadcast]).decode
_NOBLOCK = int(zmq.NOBLOCK)
_LINE_PREFIX = b'{"type":"message",'
_TEXT_FIELD = b'"text":"'


def _pids(pid: int | Sequence[int]) -> Sequence[int]:
    return (pid,) if isinstance(pid, int) else pid


def cpu_seconds(pid: int | Sequence[int]) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds; of
    several processes (the brokers of a cluster), their sum."""
    total = 0
    for one in _pids(pid):
        with open(f"/proc/{one}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2 :].split()
        # fields[0] is field 3 (state) of proc(5); utime and stime are fields 14, 15.
        total += int(fields[11]) + int(fields[12])
    return total / _CLK_TCK


def cpu_ns(pid: int | Sequence[int], main_only: bool = False) -> int:
    """CPU time of process ``pid`` in nanoseconds, from the scheduler's own
    accounting (/proc/PID/task/*/schedstat): of every thread, or of the main
    (Python) thread only. Unlike utime + stime, which tick in 10 ms steps,
    this resolves the few hundred microseconds of a single join. Of several
    processes, their sum."""
    total = 0
    for one in _pids(pid):
        tasks = [str(one)] if main_only else os.listdir(f"/proc/{one}/task")
        for tid in tasks:
            try:
                with open(f"/proc/{one}/task/{tid}/schedstat", "rb") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass  # a thread that ended meanwhile
    return total


def rss_kib(pid: int | Sequence[int]) -> int:
    """Resident set size of process ``pid`` in KiB (VmRSS); of several, their sum."""
    total = 0
    for one in _pids(pid):
        with open(f"/proc/{one}/status", "rb") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith(b"VmRSS:"))
    return total


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of an already sorted list (None if empty)."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass
class Tally:
    """Per (sender, receiver) delivery checks and the counters of one run."""

    receivers: int
    senders: int
    last: list[list[int]] = field(default_factory=list)
    missing: dict[tuple[int, int], set[int]] = field(default_factory=dict)
    received: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    latencies: list[float] = field(default_factory=list)
    #: Receivers whose latencies are kept apart (``cross``): in a cluster, those
    #: on another broker than the senders'.
    apart: frozenset[int] = frozenset()
    cross: list[float] = field(default_factory=list)
    #: Each receiver's latency list: ``latencies``, or ``cross`` for those apart.
    latency_of: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.last = [[0] * self.senders for _ in range(self.receivers)]
        self.latency_of = [
            self.cross if r in self.apart else self.latencies for r in range(self.receivers)
        ]

    def deliver(self, receiver: int, sender: int, counter: int, latency: float) -> None:
        """Record that ``receiver`` got line ``counter`` of ``sender``."""
        row = self.last[receiver]
        previous = row[sender]
        self.received += 1
        self.latency_of[receiver].append(latency)
        if counter == previous + 1:
            row[sender] = counter
        elif counter > previous + 1:
            gap = self.missing.setdefault((receiver, sender), set())
            gap.update(range(previous + 1, counter))
            row[sender] = counter
        else:
            holes = self.missing.get((receiver, sender))
            if holes is not None and counter in holes:
                holes.discard(counter)
                self.out_of_order += 1
            else:
                self.duplicated += 1

    def lost(self, sent: list[int]) -> int:
        """Lines that some receiver never got."""
        total = sum(len(gap) for gap in self.missing.values())
        for row in self.last:
            for sender, count in enumerate(sent):
                total += count - row[sender]
        return total


class LoadGen:
    """Opens the clients, joins them, runs one scenario, and reports."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.chat = args.mode == "chat"
        self.n = args.clients
        self.s = min(args.senders, args.clients)
        self.pid: tuple[int, ...] = tuple(int(p) for p in args.server_pid.split(","))
        self.engine_pid: int | None = args.engine_pid
        # Several brokers (a cluster): client i talks to broker place(i).
        self.routers = args.router.split(",")
        self.pubs = args.pub.split(",")
        self.ctx = zmq.Context()
        self.ctx.max_sockets = 2 * self.n + 64
        self.dealers: list[zmq.Socket[bytes]] = []
        self.subs: list[zmq.Socket[bytes]] = []
        self.sub_set: set[zmq.Socket[bytes]] = set()
        self.dealer_poller: zmq.Poller | None = None
        self.next_dealer_read = 0.0
        self.index: dict[zmq.Socket[bytes], int] = {}
        self.tally = Tally(
            self.n,
            self.s,
            apart=frozenset(i for i in range(self.n) if self.place(i) != self.place(0)),
        )
        self.sent = [0] * self.s
        self.acks = 0
        self.errors: list[str] = []
        self.joined = [False] * self.n
        self.sessions = [b""] * self.n  # session tokens, from the welcomes
        self.joined_count = 0
        self.other = 0  # broadcasts that are not lines (join notices, probes)
        self.ping_start = 0.0
        self.pinged = 0
        self.probes = 0  # probe frames sent by a sequential raw join
        if self.chat:
            self.say_templates = [
                b'{"type":"say","room":"bench","text":"%d:%%d:%%.6f","key":"k%d-%%d"}' % (i, i)
                for i in range(self.s)
            ]

    # --- sockets ---------------------------------------------------------

    def place(self, i: int) -> int:
        """Which broker client ``i`` talks to: round robin, but with
        ``--senders-first`` every sender on the first (so the others'
        latencies are cross-broker)."""
        if self.args.senders_first and i < self.s:
            return 0
        return i % len(self.routers)

    def open(self, count: int | None = None) -> None:
        """Open and connect the sockets of the next ``count`` clients (all)."""
        start = len(self.dealers)
        for i in range(start, self.n if count is None else start + count):
            dealer = self.ctx.socket(zmq.DEALER)
            dealer.linger = 0
            dealer.connect(self.routers[self.place(i)])
            sub = self.ctx.socket(zmq.SUB)
            sub.linger = 0
            # The generator's own queue never drops: any loss is the server's.
            sub.rcvhwm = 0
            sub.connect(self.pubs[self.place(i)])
            if not self.chat:
                sub.subscribe(b"")
            self.dealers.append(dealer)
            self.subs.append(sub)
            self.sub_set.add(sub)
            self.index[dealer] = i
            self.index[sub] = i

    def close(self) -> None:
        for sock in self.dealers + self.subs:
            sock.close(0)
        self.ctx.term()

    # --- receiving -------------------------------------------------------

    def on_sub(self, sock: zmq.Socket[bytes]) -> None:
        # The generator's hottest path: every delivery passes here, so both
        # modes do the same cheap work (two plain recv calls, a bytes split),
        # lest the generator's own cost skew one server's latency.
        receiver = self.index[sock]
        tally = self.tally
        chat = self.chat
        recv = sock.recv
        while True:
            try:
                recv(_NOBLOCK)  # the topic (or, from zmq.proxy, the routing id)
            except zmq.Again:
                return
            payload = recv(_NOBLOCK)  # a message's frames arrive together
            now = time.perf_counter()
            if chat and payload[:1] == b"[":
                # A batch: several broadcasts in one frame (PROTOCOL.md §3).
                # The in-order case of Tally.deliver inline: a million times a run.
                row = tally.last[receiver]
                latencies = tally.latency_of[receiver]
                for body in _decode_broadcasts(payload):
                    if body.type != "message":
                        self.other += 1
                        continue
                    try:
                        sender_s, counter_s, ts_s = body.text.split(":", 3)[:3]
                    except ValueError:  # a PRICE line (free when none is raised)
                        self.other += 1
                        continue
                    sender, counter = int(sender_s), int(counter_s)
                    if counter == row[sender] + 1:
                        row[sender] = counter
                        tally.received += 1
                        latencies.append(now - float(ts_s))
                    else:
                        tally.deliver(receiver, sender, counter, now - float(ts_s))
                continue
            if chat:
                # The line's text, found without a full JSON decode (msgspec
                # writes the tag first and fields in order); anything else,
                # such as a join notice, is not a line.
                if not payload.startswith(_LINE_PREFIX):
                    self.other += 1
                    continue
                start = payload.index(_TEXT_FIELD) + len(_TEXT_FIELD)
                payload = payload[start : payload.index(b'"', start)]
            elif payload[:1] == PROBE:
                self.other += 1
                if not self.joined[receiver]:
                    self.joined[receiver] = True
                    self.joined_count += 1
                continue
            try:
                sender_b, counter_b, ts_b = payload.split(b":", 3)[:3]
            except ValueError:  # a PRICE line (free when none is raised)
                self.other += 1
                continue
            tally.deliver(receiver, int(sender_b), int(counter_b), now - float(ts_b))

    def on_dealer(self, sock: zmq.Socket[bytes]) -> None:
        i = self.index[sock]
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            for body in _decode_batch(frame) if frame[:1] == b"[" else [_decode(frame)]:
                self.on_reply(i, body)

    def on_reply(self, i: int, body: _Body) -> None:
        """One reply (of a frame, or of a batch) for client ``i``."""
        kind = body.type
        if kind == "ack":
            self.acks += 1
        elif kind == "pong":
            pass
        elif kind == "welcome":
            sub = self.subs[i]
            sub.subscribe(ROOM_TOPIC)
            # Subscribed last: seeing it, the broker knows the room topic is live.
            self.sessions[i] = body.session.encode()
            sub.subscribe(b"sync/%s/0/" % self.sessions[i])
        elif kind == "joined":
            if not self.joined[i]:
                self.joined[i] = True
                self.joined_count += 1
                # As client/session.py does (PROTOCOL.md §3): a sync topic
                # left subscribed costs the XPUB about 4 KiB per client.
                self.subs[i].unsubscribe(b"sync/%s/0/" % self.sessions[i])
        elif len(self.errors) < 20:
            self.errors.append(f"client {i}: {kind} {body.code} {body.message}")

    def pump(self, poller: zmq.Poller, timeout_ms: float) -> None:
        for sock, _ in poller.poll(int(timeout_ms)):
            if sock in self.sub_set:  # cheaper than asking the socket its type
                self.on_sub(sock)
            else:
                self.on_dealer(sock)
        if self.dealer_poller is not None:
            now = time.perf_counter()
            if now >= self.next_dealer_read:
                self.next_dealer_read = now + DEALER_EVERY
                for sock, _ in self.dealer_poller.poll(0):
                    self.on_dealer(sock)

    def ping_due(self, now: float) -> None:
        """Ping every client once per PING_EVERY, spread evenly over time."""
        if not self.chat or not self.ping_start:
            return
        due = int((now - self.ping_start) / PING_EVERY * self.n)
        while self.pinged < due:
            self.dealers[self.pinged % self.n].send(b'{"type":"ping"}')
            self.pinged += 1

    # --- phases ----------------------------------------------------------

    def join(self) -> float:
        """Join every client; returns the seconds it took."""
        deadline = time.perf_counter() + self.args.join_timeout
        start = time.perf_counter()
        poller = zmq.Poller()
        if self.chat:
            for i, dealer in enumerate(self.dealers):
                dealer.send(b'{"type":"hello","v":1,"nick":"c%d","rooms":["bench"]}' % i)
                # Only the DEALERs, as each real client would read its own replies
                # at once; join notices wait on the SUBs until the join is over.
                poller.register(dealer, zmq.POLLIN)
        else:
            for sub in self.subs:
                poller.register(sub, zmq.POLLIN)
        next_probe = 0.0
        while self.joined_count < self.n:
            now = time.perf_counter()
            if now > deadline:
                raise TimeoutError(f"only {self.joined_count} of {self.n} clients joined")
            if not self.chat and now >= next_probe:
                self.dealers[0].send(PROBE)
                next_probe = now + 0.01
            self.pump(poller, 10)
        took = time.perf_counter() - start
        self.ping_start = time.perf_counter()
        return took

    def join_sequential(self) -> tuple[float, dict[str, Any]]:
        """Join the clients one after another, as people arrive in a room: a
        client connects and says hello only once the one before it has its
        ``joined`` (raw mode: once its SUB heard a probe it sent itself).
        Joined clients ping and read their SUBs meanwhile.

        Returns the seconds the joins took and, around each of JOIN_MARKS
        members, over the last tenth of the joins up to the mark (at least
        5): the server's CPU per join (all threads, and its main thread
        alone), the wall time per join, and then, with the joins paused, the
        server's CPU per second of idling (the members' pings) and its CPU per
        frame fanned out to every member on its own (PRICED_FRAMES lines said
        by the first client, or probes against a relay, each sent once the one
        before it arrived everywhere; the pings meanwhile taken off): the
        price of one join notice's fan-out."""
        deadline = time.perf_counter() + self.args.join_timeout
        windows = {m: (m - max(5, m // 10), m) for m in JOIN_MARKS if m <= self.n}
        starts = {first: m for m, (first, _) in windows.items()}
        ends = {last: m for m, (_, last) in windows.items()}
        began: dict[int, tuple[int, int, float, int]] = {}
        figures: dict[str, Any] = {}
        pings: deque[tuple[float, int]] = deque()
        joined_subs, joined_dealers = zmq.Poller(), zmq.Poller()
        next_read = 0.0
        paused = 0.0

        def service(now: float, timeout_ms: int) -> None:
            """Pings due, and what the joined clients have been sent."""
            nonlocal next_read
            while pings and pings[0][0] <= now:
                due, j = pings.popleft()
                self.dealers[j].send(b'{"type":"ping"}')
                pings.append((due + PING_EVERY, j))
            if now >= next_read or timeout_ms:
                next_read = now + DEALER_EVERY
                for sock, _ in joined_subs.poll(timeout_ms):
                    self.on_sub(sock)
                for sock, _ in joined_dealers.poll(0):
                    self.on_dealer(sock)

        start = time.perf_counter()
        for i in range(self.n):
            if i in starts:
                began[starts[i]] = (
                    cpu_ns(self.pid),
                    cpu_ns(self.pid, main_only=True),
                    time.perf_counter(),
                    self.probes,
                )
            self.open(1)
            dealer, sub = self.dealers[i], self.subs[i]
            own = zmq.Poller()
            if self.chat:
                dealer.send(b'{"type":"hello","v":1,"nick":"c%d","rooms":["bench"]}' % i)
                own.register(dealer, zmq.POLLIN)
            else:
                own.register(sub, zmq.POLLIN)
            next_probe = 0.0
            heard = 0
            while not self.joined[i]:
                now = time.perf_counter()
                if now > deadline:
                    raise TimeoutError(f"only {i} of {self.n} clients joined (one at a time)")
                # A probe every 2 ms at most, and only once the last one reached
                # every earlier SUB: a relay busy fanning out is not buried in
                # probes. Each probe is counted as a frame fanned out.
                if not self.chat and now >= next_probe and self.other >= heard:
                    dealer.send(PROBE)
                    self.probes += 1
                    heard = self.other + i
                    next_probe = now + 0.002
                service(now, 0)
                for sock, _ in own.poll(10 if self.chat else 2):
                    if sock is sub:
                        self.on_sub(sock)
                    else:
                        self.on_dealer(sock)
            joined_subs.register(sub, zmq.POLLIN)
            if self.chat:
                joined_dealers.register(dealer, zmq.POLLIN)
                pings.append((time.perf_counter() + PING_EVERY, i))
            mark = ends.get(i + 1)
            if mark is None:
                continue
            cpu0, main0, wall0, probes0 = began[mark]
            joins = mark - windows[mark][0]
            figures[f"join_cpu_ms_{mark}"] = (cpu_ns(self.pid) - cpu0) / 1e6 / joins
            figures[f"join_main_ms_{mark}"] = (
                (cpu_ns(self.pid, main_only=True) - main0) / 1e6 / joins
            )
            figures[f"join_wall_ms_{mark}"] = (time.perf_counter() - wall0) * 1e3 / joins
            if not self.chat:
                figures[f"join_frames_{mark}"] = (self.probes - probes0) / joins
            # The joins paused: what idling costs, and what one frame costs.
            pause0 = time.perf_counter()
            cpu0 = cpu_ns(self.pid)
            while time.perf_counter() < pause0 + IDLE_WINDOW:
                service(time.perf_counter(), 5)
            idle = time.perf_counter() - pause0
            idle_rate = (cpu_ns(self.pid) - cpu0) / 1e6 / idle
            figures[f"idle_cpu_ms_per_s_{mark}"] = idle_rate
            # One frame fanned out to every member, alone: a line said by the
            # first client (the broker's own handling of a line included), or
            # a probe against a relay; the pings meanwhile taken off.
            cpu0 = cpu_ns(self.pid)
            priced0 = time.perf_counter()
            for _ in range(PRICED_FRAMES):
                heard = self.other + mark
                self.dealers[0].send(PRICE if self.chat else PROBE)
                while self.other < heard:
                    if time.perf_counter() > deadline:
                        raise TimeoutError("a priced frame did not reach every SUB")
                    service(time.perf_counter(), 5)
            cpu = (cpu_ns(self.pid) - cpu0) / 1e6 - idle_rate * (time.perf_counter() - priced0)
            figures[f"frame_cpu_ms_{mark}"] = cpu / PRICED_FRAMES
            paused += time.perf_counter() - pause0
        took = time.perf_counter() - start - paused
        self.ping_start = time.perf_counter()
        return took, figures

    def idle(self, poller: zmq.Poller) -> dict[str, float]:
        """The servers' and the engine's CPU per second with every client
        joined and idle (pinging): what the clients cost when nobody talks."""
        cpu0, engine0 = cpu_ns(self.pid), cpu_ns(self.engine_pid or ())
        start = time.perf_counter()
        while (now := time.perf_counter()) < start + IDLE_WINDOW:
            self.ping_due(now)
            self.pump(poller, 5)
        took = time.perf_counter() - start
        return {
            "idle_cpu_ms_per_s": (cpu_ns(self.pid) - cpu0) / 1e6 / took,
            "engine_idle_ms_per_s": (cpu_ns(self.engine_pid or ()) - engine0) / 1e6 / took,
        }

    def full_poller(self) -> zmq.Poller:
        """A poller of the SUBs. Once joined, a chat client's DEALER carries
        only acks and pongs, which nothing waits for: they are read every
        DEALER_EVERY seconds instead, because every socket in the poller costs
        the generator on every wake-up (2n sockets instead of n made the
        generator, not the server, the tail of the paced latency)."""
        poller = zmq.Poller()
        for sock in self.subs:
            poller.register(sock, zmq.POLLIN)
        if self.chat:
            self.dealer_poller = zmq.Poller()
            for sock in self.dealers:
                self.dealer_poller.register(sock, zmq.POLLIN)
        return poller

    def settle(self, poller: zmq.Poller) -> None:
        """Read until nothing has arrived for QUIET seconds."""
        deadline = time.perf_counter() + self.args.join_timeout
        while time.perf_counter() < deadline:
            self.ping_due(time.perf_counter())
            if not poller.poll(int(QUIET * 1000)):
                return
            self.pump(poller, 0)

    def load(self, poller: zmq.Poller) -> dict[str, Any]:
        """Send for the scenario's duration, then wait for every delivery."""
        args = self.args
        tally = self.tally
        own = tally.last  # own[s][s]: what sender s has seen of its own lines
        window = args.window
        sent = self.sent
        chat = self.chat
        dealers = self.dealers
        templates: list[bytes] = self.say_templates if chat else []
        # Raw lines are padded to the size of the broker's broadcast of a line,
        # so that the baselines move as many bytes per delivery as the broker.
        pad: bytes = b"x" * args.payload_bytes
        # pyzmq's compiled send, as the servers use it: Socket.send is a Python
        # wrapper that costs the generator 0.2 µs a line, in every mode alike.
        send = zmq.backend.Socket.send

        def line(s: int, c: int) -> bytes:
            """Line ``c`` of sender ``s``, stamped as it leaves."""
            if chat:
                return templates[s] % (c, time.perf_counter(), c)
            head = b"%d:%d:%.6f:" % (s, c, time.perf_counter())
            return head + pad[len(head) :]

        paced = args.rate > 0
        interval = 1.0 / args.rate if paced else 0.0
        server0 = cpu_seconds(self.pid)
        main0 = cpu_ns(self.pid, main_only=True)
        engine0 = cpu_ns(self.engine_pid) if self.engine_pid else 0
        gen0 = time.process_time()
        start = time.perf_counter()
        stop_sending = start + args.duration
        next_due = start
        lines = 0
        while True:
            now = time.perf_counter()
            if now >= stop_sending:
                break
            self.ping_due(now)
            if paced:
                while next_due <= now:
                    s = lines % self.s
                    if sent[s] - own[s][s] < window:
                        sent[s] += 1
                        send(dealers[s], line(s, sent[s]))
                    lines += 1
                    next_due = start + lines * interval
                # Rounded up: a poll(0) here would spin; a line sent up to 1 ms late
                # is still stamped when it leaves, so latency is unaffected.
                wait = math.ceil(max(0.0, min(next_due, stop_sending) - time.perf_counter()) * 1000)
            else:
                for s in range(self.s):
                    room = window - (sent[s] - own[s][s])
                    # A bounded chunk per sender keeps the loop reading in between.
                    for _ in range(min(room, 64)):
                        sent[s] += 1
                        send(dealers[s], line(s, sent[s]))
                wait = 50.0
            self.pump(poller, wait)
        sending_stopped = time.perf_counter()
        expected = sum(sent) * self.n
        drain_deadline = sending_stopped + args.drain_timeout
        while time.perf_counter() < drain_deadline:
            if tally.received - tally.duplicated >= expected and (
                not chat or self.acks >= sum(sent)
            ):
                break
            self.ping_due(time.perf_counter())
            self.pump(poller, 20)
        end = time.perf_counter()
        server_cpu = cpu_seconds(self.pid) - server0
        main_cpu = (cpu_ns(self.pid, main_only=True) - main0) / 1e9
        engine_cpu = (cpu_ns(self.engine_pid) - engine0) / 1e9 if self.engine_pid else None
        gen_cpu = time.process_time() - gen0
        wall = end - start
        lines_sent = sum(sent)
        accepted = self.acks if chat else lines_sent
        deliveries = tally.received
        lat = sorted(tally.latencies + tally.cross)
        cross = sorted(tally.cross)
        return {
            "wall_s": wall,
            "send_s": sending_stopped - start,
            "lines_sent": lines_sent,
            "lines_accepted": accepted,
            "deliveries": deliveries,
            "expected_deliveries": expected,
            "lost": tally.lost(sent),
            "duplicated": tally.duplicated,
            "out_of_order": tally.out_of_order,
            "server_cpu_s": server_cpu,
            "gen_cpu_s": gen_cpu,
            "server_util": server_cpu / wall,
            "gen_util": gen_cpu / wall,
            "deliveries_per_s": deliveries / wall,
            "lines_per_s": accepted / wall,
            "cpu_us_per_delivery": server_cpu * 1e6 / deliveries if deliveries else None,
            "cpu_us_per_line": server_cpu * 1e6 / accepted if accepted else None,
            # The server's main thread alone (for us: all of the broker's Python).
            "main_cpu_us_per_line": main_cpu * 1e6 / accepted if accepted else None,
            "latency_p50_ms": _ms(percentile(lat, 0.50)),
            "latency_p99_ms": _ms(percentile(lat, 0.99)),
            "latency_max_ms": _ms(lat[-1] if lat else None),
            # Receivers on another broker than the senders (a cluster, senders first).
            "cross_latency_p50_ms": _ms(percentile(cross, 0.50)),
            "cross_latency_p99_ms": _ms(percentile(cross, 0.99)),
            "cross_deliveries": len(cross),
            # The engine (Redis) process, if given: its CPU per accepted line.
            **(
                {
                    "engine_cpu_s": engine_cpu,
                    "engine_cpu_us_per_line": engine_cpu * 1e6 / accepted if accepted else None,
                    "engine_util": engine_cpu / wall,
                }
                if engine_cpu is not None
                else {}
            ),
        }

    def run(self) -> dict[str, Any]:
        rss_before = rss_kib(self.pid)
        server_join0 = cpu_seconds(self.pid)
        join_figures: dict[str, Any] = {}
        try:
            if self.args.sequential:
                join_s, join_figures = self.join_sequential()
            else:
                self.open()
                join_s = self.join()
            join_cpu = cpu_seconds(self.pid) - server_join0
            poller = self.full_poller()
            self.settle(poller)
            rss_after = rss_kib(self.pid)
            if self.args.measure_idle:
                join_figures.update(self.idle(poller))
            result: dict[str, Any] = {
                "mode": self.args.mode,
                "clients": self.n,
                "senders": self.s,
                "join_s": join_s,
                "join_cpu_s": join_cpu,
                "rss_before_kib": rss_before,
                "rss_joined_kib": rss_after,
                "rss_per_client_kib": (rss_after - rss_before) / self.n,
                **join_figures,
            }
            if self.s > 0 and self.args.duration > 0:
                result.update(self.load(poller))
                result["rss_end_kib"] = rss_kib(self.pid)
            result["acks"] = self.acks
            result["other_broadcasts"] = self.other
            result["errors"] = self.errors
            return result
        finally:
            self.close()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def build_parser() -> argparse.ArgumentParser:
    """Options of ``python -m bench.loadgen`` (normally set by bench/run.py)."""
    parser = argparse.ArgumentParser(prog="bench.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["chat", "raw"], required=True)
    parser.add_argument("--router", required=True, help="ROUTER endpoint(s), comma-separated")
    parser.add_argument("--pub", required=True, help="PUB endpoint(s), in the same order")
    parser.add_argument("--server-pid", required=True, help="server pid(s), comma-separated")
    parser.add_argument("--engine-pid", type=int, help="the engine's pid (Redis): its CPU too")
    parser.add_argument(
        "--measure-idle",
        action="store_true",
        help="once joined, a second of idling: the servers' (and engine's) CPU per second",
    )
    parser.add_argument(
        "--senders-first",
        action="store_true",
        help="several brokers: every sender on the first (the others' latency is cross-broker)",
    )
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--senders", type=int, default=0)
    parser.add_argument("--duration", type=float, default=0.0, help="seconds of sending")
    parser.add_argument("--rate", type=float, default=0.0, help="lines/s in all; 0 = flood")
    parser.add_argument("--window", type=int, default=100, help="lines in flight per sender")
    parser.add_argument(
        "--payload-bytes",
        type=int,
        default=140,
        help="raw mode: bytes per line (our broker's broadcast of a line is about 140)",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="join the clients one after another, each waiting for its joined",
    )
    parser.add_argument("--join-timeout", type=float, default=30.0)
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one scenario and print its result as JSON."""
    args = build_parser().parse_args(argv)
    try:
        result = LoadGen(args).run()
    except TimeoutError as exc:
        result = {"mode": args.mode, "clients": args.clients, "failed": str(exc)}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
