"""The broker's event loop: one thread, a ROUTER and an XPUB, and the core.

The loop only moves bytes: it drains each socket until it would block, hands
what it read to :class:`~broker.core.BrokerCore`, makes the history durable
(one flush per batch) and only then sends what the core decided, so nothing is
published or acknowledged before it is stored. Lines the store could not keep
(disk full, an I/O error) are taken back and refused instead
(:meth:`~broker.core.BrokerCore.unstored`, broker/storage.py).
"""

from __future__ import annotations

import errno
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import zmq

from broker import auth
from broker.core import Action, BrokerConfig, BrokerCore, Publish
from broker.history import HistoryStore
from broker.topics import TopicStore
from protocol import Broadcast, Reply, pack_messages, room_topic

if TYPE_CHECKING:  # cluster mode imports redis; SQLite mode never does
    from broker.cluster import ClusterShell

__all__ = ["BrokerServer"]

log = logging.getLogger("broker")

#: How often the core checks heartbeats and pending joins, in seconds.
TICK_SECONDS = 0.25
#: Most requests read in one batch before the loop sends what they produced.
BATCH = 500
#: Most XPUB notices read in one batch (the rest wait for the next turn).
SUBSCRIPTION_BATCH = 5_000
#: How long, at shutdown, the ROUTER may spend delivering "shutdown" notices.
SHUTDOWN_LINGER_MS = 500


class BrokerServer:
    """Binds the sockets and runs the loop; :meth:`stop` may be called from a
    signal handler or another thread."""

    def __init__(
        self,
        router_endpoint: str,
        pub_endpoint: str,
        config: BrokerConfig | None = None,
        history: HistoryStore | None = None,
        advertised_pub: str | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        pub_hwm: int = 10_000,
        curve_keys: tuple[bytes, bytes] | None = None,
        allowed_keys: frozenset[str] | None = None,
        topics: TopicStore | None = None,
        cluster: ClusterShell | None = None,
    ) -> None:
        """``curve_keys`` (public, secret; Z85) make both sockets CURVE servers;
        ``allowed_keys`` (Z85 public keys) then limits who may connect
        (docs/SECURITY.md). ``cluster`` puts the broker in cluster mode: the
        engine numbers, stores and shares (docs/CLUSTER.md); ``history`` is
        then unused."""
        config = config or BrokerConfig()
        self._own_context = context is None
        self._ctx = context or zmq.Context()
        self._allowed = allowed_keys
        self._zap: zmq.Socket[bytes] | None = None
        if curve_keys is not None:
            # Our own ZAP handler, polled by the loop (broker/auth.py says why);
            # it must be bound before a CURVE socket sees its first client.
            self._zap = self._ctx.socket(zmq.REP)
            self._zap.linger = 0
            self._zap.bind(auth.ZAP_ENDPOINT)
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.linger = 0
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._router.setsockopt(zmq.MAXMSGSIZE, config.max_frame)
        self._xpub = self._ctx.socket(zmq.XPUB)
        self._xpub.linger = 0
        # Subscriptions are frames too: no client may send a huge one.
        self._xpub.setsockopt(zmq.MAXMSGSIZE, config.max_frame)
        if curve_keys is not None:
            for sock in (self._router, self._xpub):
                sock.curve_server = True
                sock.curve_publickey, sock.curve_secretkey = curve_keys
                sock.zap_domain = b"chat"
        # A subscriber that falls this far behind misses broadcasts (never the
        # broker stalling for it) and repairs the gap from history.
        self._xpub.sndhwm = pub_hwm
        # Every subscription, even a repeated one, so sync topics are never missed.
        self._xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        try:
            for sock, endpoint in ((self._router, router_endpoint), (self._xpub, pub_endpoint)):
                # An IPv6 literal ("tcp://[::1]:5556", docs/PROTOCOL.md §1) needs
                # ZMQ_IPV6; other endpoints keep libzmq's IPv4 default.
                sock.ipv6 = "://[" in endpoint
                sock.bind(endpoint)
        except zmq.ZMQError:
            self._close_sockets()
            raise
        self.router_endpoint = _endpoint(self._router)
        self.pub_endpoint = _endpoint(self._xpub)
        config.pub_endpoint = advertised_pub or self.pub_endpoint
        self._cluster = cluster
        try:
            if cluster is not None:
                self.core: BrokerCore = cluster.make_core(config, self._ctx)
            else:
                self.core = BrokerCore(config, history, topics=topics)
        except BaseException:  # the stored keys could not be read, the engine refused
            self._close_sockets()
            raise
        self._stopping = False
        self._topics: dict[str, bytes] = {}
        self._clock: Callable[[], float] = time.time

    def _close_sockets(self) -> None:
        self._router.close(0)
        self._xpub.close(0)
        if self._zap is not None:
            self._zap.close(0)
        if self._own_context:
            self._ctx.term()

    def stop(self) -> None:
        """Ask the loop to finish (it tells clients and closes within a tick)."""
        self._stopping = True

    def serve_forever(self) -> None:
        """Run until :meth:`stop`; then tell clients, close sockets, flush history."""
        router, xpub, zap, core = self._router, self._xpub, self._zap, self.core
        cluster = self._cluster
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(xpub, zmq.POLLIN)
        bus = None
        if cluster is not None:
            bus = cluster.socket
            poller.register(bus, zmq.POLLIN)
        if zap is not None:
            poller.register(zap, zmq.POLLIN)
            log.info(
                "CURVE on; %s",
                "any key may connect"
                if self._allowed is None
                else f"{len(self._allowed)} allowed keys",
            )
        clock = self._clock
        next_tick = time.monotonic() + TICK_SECONDS
        log.info("router bound to %s", self.router_endpoint)
        log.info(
            "pub bound to %s (clients are told %s)", self.pub_endpoint, core.config.pub_endpoint
        )
        try:
            while not self._stopping:
                wait_ms = max(0.0, (next_tick - time.monotonic()) * 1000)
                ready = dict(poller.poll(math.ceil(wait_ms)))
                actions: list[Action] = []
                if zap is not None and zap in ready:
                    self._authenticate(zap)
                if xpub in ready:
                    notices: list[bytes] = []
                    for _ in range(SUBSCRIPTION_BATCH):
                        try:
                            notices.append(xpub.recv(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                    actions += core.subscribed_all(notices, clock())
                if router in ready:
                    actions += self._read_requests(router, clock)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK_SECONDS
                    actions += core.tick(clock())
                if cluster is not None:
                    # The engine numbers and stores what the core proposed;
                    # broadcasts come back on the bus, from every broker.
                    if actions:
                        actions = cluster.settle(actions)
                    if bus in ready:
                        actions += cluster.pump()
                    actions += cluster.timers(clock())
                    if actions:
                        self._execute(actions)
                elif actions:
                    self._store_and_execute(actions)
        finally:
            self._close()

    def _read_requests(self, router: zmq.Socket[bytes], clock: Callable[[], float]) -> list[Action]:
        """Up to BATCH requests off the ROUTER, each decided by the core."""
        handle = self.core.handle
        actions: list[Action] = []
        if self._zap is not None:
            for _ in range(BATCH):
                try:
                    # Uncopied frames carry the ZAP User-Id (the key).
                    parts = router.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                user = parts[-1].get("User-Id")
                peer = user if isinstance(user, str) and user else None
                frames = [part.bytes for part in parts]
                actions += handle(frames[0], frames[1:], clock(), peer)
            return actions
        # The hot path, once per line: the same result as recv_multipart at a
        # third of the cost. A request is almost always one frame after the
        # routing id, and an uncopied frame's own ``more`` flag is far cheaper
        # than getsockopt(RCVMORE) (docs/PERFORMANCE.md).
        recv = router.recv
        for _ in range(BATCH):
            try:
                identity = recv(_NOBLOCK)
            except zmq.Again:
                break
            # Once the routing id is in, the rest of the message is there too.
            frame = recv(_NOBLOCK, copy=False)
            body = [frame.bytes]
            while frame.more:  # several frames: refused by the core, but read whole
                frame = recv(_NOBLOCK, copy=False)
                body.append(frame.bytes)
            actions += handle(identity, body, clock(), None)
        return actions

    def _authenticate(self, zap: zmq.Socket[bytes]) -> None:
        # REP: one request, one reply, so answer each before reading the next.
        while True:
            try:
                request = zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply, note = auth.decide(request, self._allowed)
            (log.debug if reply[2] == b"200" else log.warning)("ZAP: %s", note)
            zap.send_multipart(reply)

    def _store_and_execute(self, actions: list[Action]) -> None:
        """SQLite (or memory) mode: make the turn's lines durable, then send
        what the turn decided. The rooms' frames are encoded first and handed
        to the store, which keeps those bytes instead of encoding the same
        lines again (docs/PERFORMANCE.md); if it refuses lines, nothing of
        them goes out (broker/storage.py) and the rest is encoded anew."""
        core = self.core
        rooms, clients = _group(actions)
        frames = {room: pack_messages(messages) for room, messages in rooms.items()}
        refused = core.history.flush(
            {room: (rooms[room], room_frames) for room, room_frames in frames.items()}
        )
        if refused:
            self._execute(core.unstored(refused, actions))
        else:
            self._send(frames, clients)

    def _execute(self, actions: list[Action]) -> None:
        rooms, clients = _group(actions)
        self._send({room: pack_messages(messages) for room, messages in rooms.items()}, clients)

    def _send(self, rooms: dict[str, list[bytes]], clients: dict[bytes, list[Reply]]) -> None:
        """Each room's frames to its topic, then each client's replies, packed."""
        router, xpub = self._router, self._xpub
        # pyzmq's Socket.send is a Python wrapper (for DRAFT routing ids and
        # groups) around the compiled send: calling the compiled one directly
        # saves 0.2 µs per frame (docs/PERFORMANCE.md).
        send = _send
        topics = self._topics
        for room, frames in rooms.items():
            topic = topics.get(room)
            if topic is None:
                if len(topics) >= _TOPIC_CACHE:
                    topics.clear()
                topic = topics[room] = room_topic(room)
            # Frame by frame with int flags: send_multipart costs over a
            # microsecond more per message in flag arithmetic.
            for frame in frames:
                send(xpub, topic, _SNDMORE)
                send(xpub, frame)
        for identity, replies in clients.items():
            try:
                for frame in pack_messages(replies):
                    send(router, identity, _SNDMORE_NOBLOCK)
                    send(router, frame, _NOBLOCK)
            except zmq.Again:
                # That client's queue is full: it is not reading. Drop rather than
                # stall everyone; its heartbeats or gap repair will sort it out.
                log.warning("dropped a reply to a client that is not reading")
            except zmq.ZMQError as exc:
                if exc.errno != errno.EHOSTUNREACH:
                    raise
                self.core.unreachable(identity)

    def _close(self) -> None:
        try:
            actions = self.core.shutdown(self._clock())
            if actions:
                log.info("telling %d clients the broker is shutting down", len(actions))
                self._execute(actions)
        finally:
            self.core.history.close()
            self.core.topics.close()
            if self._cluster is not None:
                self._cluster.close()
            self._router.close(linger=SHUTDOWN_LINGER_MS)
            self._xpub.close(linger=0)
            if self._zap is not None:
                self._zap.close(linger=0)
            if self._own_context:
                self._ctx.term()
            log.info("broker stopped")


def _group(actions: list[Action]) -> tuple[dict[str, list[Broadcast]], dict[bytes, list[Reply]]]:
    """What a turn decided, by room and by client, in order.

    Everything one turn produced for the same room, or the same client, goes
    out together in as few frames as fit (protocol.pack_messages, one encoder
    call per frame): per frame, ZeroMQ's I/O thread and the kernel cost far
    more than the bytes, and a busy room's turn holds dozens of lines
    (docs/PERFORMANCE.md). Order is kept per room and per client."""
    rooms: dict[str, list[Broadcast]] = {}
    clients: dict[bytes, list[Reply]] = {}
    for action in actions:
        if type(action) is Publish:
            message = action.message
            group = rooms.get(message.room)
            if group is None:
                rooms[message.room] = [message]
            else:
                group.append(message)
        else:
            identity = action.identity  # type: ignore[union-attr]
            replies = clients.get(identity)
            if replies is None:
                clients[identity] = [action.message]  # type: ignore[list-item]
            else:
                replies.append(action.message)  # type: ignore[arg-type]
    return rooms, clients


# Plain ints: combining pyzmq's enum flags per frame is slow on the hot path.
_send = zmq.backend.Socket.send
#: Rooms whose PUB topic frame is kept ready (cleared wholesale when full).
_TOPIC_CACHE = 10_000
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_SNDMORE_NOBLOCK = _SNDMORE | _NOBLOCK


def _endpoint(socket: zmq.Socket[bytes]) -> str:
    value = socket.getsockopt(zmq.LAST_ENDPOINT)
    assert isinstance(value, bytes)
    return value.decode()
