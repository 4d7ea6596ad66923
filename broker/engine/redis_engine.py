"""The Redis implementation of :class:`~broker.engine.api.Engine` (docs/CLUSTER.md).

Every write is one Redis 7 Function call (``zchat.lua`` beside this file),
atomic on the server; calls for several rooms go out pipelined in one round
trip. Functions rather than EVALSHA scripts: redis-py checks a pipeline's
scripts with an extra SCRIPT EXISTS round trip on every execute, while
functions are loaded once and persist with the data (AOF).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from redis import exceptions as rx
from redis.sentinel import MasterNotFoundError

from broker.engine import redis_reaper, redis_sessions
from broker.engine.api import (
    AppendResult,
    Duplicate,
    Engine,
    EngineError,
    EngineUnavailable,
    History,
    InboxLine,
    Member,
    NewLine,
    ReapReport,
    RoomMeta,
    SessionRecord,
    StoredLine,
)
from broker.engine.redis_io import (
    EngineSettings,
    Keys,
    RedisIO,
    check_server,
    new_broker_id,
    new_epoch,
    parse_member,
    stream_field,
    text,
)
from broker.engine.url import EngineURL, parse_url

__all__ = ["EngineSettings", "RedisEngine", "check_server", "new_epoch"]

log = logging.getLogger(__name__)


def _one_line(exc: Exception, url: EngineURL) -> str:
    """Why Redis could not be reached, in one line. redis-py's "no master"
    appends the repr of every Sentinel connection it tried (pages of it)."""
    if isinstance(exc, MasterNotFoundError):
        where = ", ".join(f"{host}:{port}" for host, port in url.sentinels)
        if " : " in str(exc):
            return f"no primary for {url.service!r}: a Sentinel ({where}) could not be reached"
        return f"no primary for {url.service!r}: the Sentinels ({where}) do not monitor it"
    return " ".join(str(exc).split())  # one line, whatever redis-py says


class RedisEngine:
    """The cluster engine on one Redis primary (directly or through Sentinel).

    Not thread-safe: one broker loop uses it (the bus reader has its own
    connection). Construct with :meth:`connect`. The reaper and the session
    records live in ``redis_reaper`` and ``redis_sessions``; the plumbing
    (errors, function calls) in ``redis_io``.
    """

    def __init__(
        self, client: redis.Redis, url: EngineURL, settings: EngineSettings | None = None
    ) -> None:
        self._io = RedisIO(client, url, settings or EngineSettings())
        #: The highest (epoch, seq) seen per room: every call on a room passes
        #: it as a floor, and the functions start a new epoch when the room's
        #: seq is below it under the same epoch (a failover to a replica that
        #: missed acknowledged writes; docs/CLUSTER.md "Failover").
        self._seen: dict[str, RoomMeta] = {}
        self.warnings: list[str] = []
        #: The last WAIT saw fewer replicas than required.
        self._replicas_short = False

    @classmethod
    def connect(cls, url: str | EngineURL, settings: EngineSettings | None = None) -> RedisEngine:
        """Connect, check the server (see :func:`check_server`) and load the
        functions. Raises EngineUnavailable with a one-line message naming the
        URL when Redis cannot be reached, EngineConfigError when unsafe."""
        parsed = parse_url(url) if isinstance(url, str) else url
        settings = settings or EngineSettings()
        client = parsed.client(timeout=settings.timeout)
        engine = cls(client, parsed, settings)
        try:
            engine.warnings = check_server(client)
            engine._io.load()
        except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
            client.close()
            reason = _one_line(exc, parsed)
            raise EngineUnavailable(f"cannot reach Redis at {parsed.display}: {reason}") from None
        except rx.ResponseError as exc:
            client.close()
            raise EngineUnavailable(f"Redis at {parsed.display} refused: {exc}") from None
        except EngineError:
            client.close()
            raise
        for warning in engine.warnings:
            log.warning("%s", warning)
        return engine

    @property
    def broker_id(self) -> str:
        return self._io.broker

    @property
    def url(self) -> EngineURL:
        """Where this engine's Redis is."""
        return self._io.url

    @property
    def settings(self) -> EngineSettings:
        """The engine's timings and sizes."""
        return self._io.settings

    @property
    def keys(self) -> Keys:
        """Key and channel names."""
        return self._io.keys

    # -- registry -----------------------------------------------------------

    def register(self) -> None:
        while not self._io.call("zc_register", [self.keys.brokers], [self._io.broker], write=True):
            self._io.broker = new_broker_id()  # taken (a fenced id stays dead)

    def renew_id(self) -> None:
        """Take a new broker id (after Fenced) without registering it yet."""
        self._io.broker = new_broker_id()

    def heartbeat(self) -> None:
        self._io.call("zc_heartbeat", [self.keys.brokers], self._io.fence_args(), write=True)

    def dead_brokers(self) -> list[str]:
        ids = self._io.call("zc_dead", [self.keys.brokers], [self.settings.broker_ttl], write=False)
        return [i.decode() for i in ids]

    def reap(self, broker: str) -> ReapReport | None:
        return redis_reaper.reap(self._io, broker)

    # -- rooms ----------------------------------------------------------------

    def append(
        self, batches: Mapping[str, Sequence[NewLine]]
    ) -> dict[str, AppendResult | EngineUnavailable]:
        s = self.settings
        rooms = [room for room, lines in batches.items() if lines]
        calls = []
        for room in rooms:
            args: list[Any] = [
                *self._io.fence_args(),
                new_epoch(),
                s.history_lines,
                s.key_memory,
                self.keys.bus(room),
                *self._floor(room),
            ]
            for line in batches[room]:
                args += [line.key or "", line.payload]
            calls.append(("zc_append", [*self.keys.room(room), self.keys.brokers], args))
        wait = (s.replicas, self._replica_wait()) if s.replicas else None
        results = self._io.pipelined(calls, write=True, wait=wait)
        confirmed = True
        if wait is not None:
            replicas = results.pop()
            confirmed = not isinstance(replicas, Exception) and int(replicas) >= s.replicas
            self._replicas_short = not confirmed
            if not confirmed:
                log.warning("only %s of %d replicas confirmed: not acknowledged", replicas, wait[0])
        out: dict[str, AppendResult | EngineUnavailable] = {}
        for room, result in zip(rooms, results, strict=True):
            if isinstance(result, Exception):
                error = self._io.translate(result)
                if isinstance(error, EngineUnavailable):
                    out[room] = error
                    continue
                raise error  # Fenced (for every room alike) or a bug
            epoch = result[0].decode()
            seqs = tuple(abs(int(s)) for s in result[1])
            # (no third element: a library loaded by an older broker)
            originals = result[2] if len(result) > 2 else [b""] * len(result[1])
            dups = tuple(
                Duplicate(i, -int(s), bytes(originals[i]) or None)
                for i, s in enumerate(result[1])
                if int(s) < 0
            )
            if len(dups) < len(seqs):  # new lines: the newest is the room's seq now
                epoch = self._observe(room, epoch, max(seqs))
            out[room] = AppendResult(epoch, seqs, dups, confirmed)
        return out

    def _replica_wait(self) -> int:
        """How long this turn's WAIT may block the broker's loop: the full
        ``replica_wait`` normally; while the replicas fall short, a few ms, so
        that a replica outage does not slow every turn (resends ask again)."""
        return (
            min(10, self.settings.replica_wait)
            if self._replicas_short
            else (self.settings.replica_wait)
        )

    def fetch(
        self, room: str, after: int, before: int | None, limit: int, *, forward: bool = False
    ) -> History:
        upper = -1 if before is None else before
        args = [new_epoch(), after, upper, limit, int(forward), *self._floor(room)]
        # write=False although a floor may start a new epoch: unconfirmed,
        # the next call on the room starts it (the floor is still there)
        epoch, seq, missed, entries = self._io.call(
            "zc_fetch", self.keys.room(room), args, write=False
        )
        lines: list[StoredLine] = []
        missed = int(missed)
        for eid, fields in entries:
            seq_of = int(eid.split(b"-", 1)[0])
            hole = _hole(fields)
            if hole:  # seqs lost in a failover: missed, as trimmed lines are
                low, high = seq_of - hole + 1, seq_of if upper < 0 else min(seq_of, upper - 1)
                missed += max(0, high - max(low, after + 1) + 1)
            else:
                lines.append(StoredLine(seq_of, stream_field(fields, b"d")))
        if not forward:
            lines.reverse()
        meta = RoomMeta(int(seq), self._observe(room, epoch.decode(), int(seq)))
        return History(tuple(lines), missed, meta)

    def meta(self, rooms: Sequence[str]) -> dict[str, RoomMeta]:
        results = self._io.pipelined(
            [
                ("zc_meta", self.keys.room(room), [new_epoch(), *self._floor(room)])
                for room in rooms
            ],
            write=False,  # see fetch
        )
        out: dict[str, RoomMeta] = {}
        for room, result in zip(rooms, results, strict=True):
            if isinstance(result, Exception):
                raise self._io.translate(result)
            seq = int(result[1])
            out[room] = RoomMeta(seq, self._observe(room, result[0].decode(), seq))
        return out

    def saw(self, room: str, meta: RoomMeta) -> None:
        self._observe(room, meta.epoch, meta.seq)

    def _floor(self, room: str) -> tuple[str, int]:
        """The floor passed with every call on a room: the highest seq seen."""
        seen = self._seen.get(room)
        return ("", 0) if seen is None else (seen.epoch, seen.seq)

    def _observe(self, room: str, epoch: str, seq: int) -> str:
        """Track the room's numbering (the next calls' floor)."""
        seen = self._seen.get(room)
        if seen is not None and seen.epoch != epoch and seq >= seen.seq:
            log.warning("room %s: new epoch %s from seq %d", room, epoch, seq)
        if seen is None or seen.epoch != epoch or seq > seen.seq:
            self._seen[room] = RoomMeta(seq, epoch)
        return epoch

    def publish(self, room: str, payload: bytes) -> None:
        self._io.call(
            "zc_publish",
            [self.keys.brokers],
            [*self._io.fence_args(), self.keys.bus(room), payload],
            write=True,
        )

    # -- nicknames --------------------------------------------------------------

    def claim_nick(self, nick_key: str, session: str) -> bool:
        k = self.keys
        won = self._io.call(
            "zc_claim_nick",
            [k.nick(nick_key), k.brokers, k.broker(self._io.broker, "nicks")],
            [*self._io.fence_args(), self._io.holder(session), self.settings.nick_lease, nick_key],
            write=True,
        )
        return bool(won)

    def refresh_nicks(self, leases: Mapping[str, str]) -> list[str]:
        if not leases:
            return []
        k = self.keys
        nick_keys = list(leases)
        args: list[Any] = [*self._io.fence_args(), self.settings.nick_lease]
        for nick_key in nick_keys:
            args += [nick_key, self._io.holder(leases[nick_key])]
        lost = self._io.call(
            "zc_refresh_nicks",
            [k.brokers, k.broker(self._io.broker, "nicks"), *(k.nick(n) for n in nick_keys)],
            args,
            write=True,
        )
        return [nick_keys[int(i)] for i in lost]

    def release_nick(self, nick_key: str, session: str) -> bool:
        k = self.keys
        done = self._io.call(
            "zc_release_nick",
            [k.nick(nick_key), k.broker(self._io.broker, "nicks")],
            [self._io.holder(session), nick_key],
            write=True,
        )
        return bool(done)

    def nick_holder(self, nick_key: str) -> tuple[str, str] | None:
        """The (broker, session) holding a nickname, if any (private lines)."""
        with self._io.errors(write=False):
            value = self._io.r.get(self.keys.nick(nick_key))
        if value is None:
            return None
        broker, _, session = text(value).partition("/")
        return broker, session

    # -- membership ---------------------------------------------------------------

    def join(self, room: str, member: Member, notice: bytes | None = None) -> bool:
        k = self.keys
        added = self._io.call(
            "zc_join",
            [k.members(room), k.room(room)[0], k.brokers, k.broker(self._io.broker, "rooms")],
            [
                *self._io.fence_args(),
                member.nick_key,
                member.session,
                member.nick,
                room,
                k.bus(room),
                notice or b"",
            ],
            write=True,
        )
        return bool(added)

    def leave(self, room: str, member: Member, notice: bytes | None = None) -> bool:
        k = self.keys
        done = self._io.call(
            "zc_leave",
            [k.members(room)],
            [self._io.broker, member.nick_key, member.session, k.bus(room), notice or b""],
            write=True,
        )
        return bool(done)

    def members(self, room: str) -> list[Member]:
        with self._io.errors(write=False):
            raw: Any = self._io.r.hgetall(self.keys.members(room))
        ordered = sorted((parse_member(n, v) for n, v in raw.items()), key=lambda pair: pair[0])
        return [member for _, member in ordered]

    def rooms(self) -> dict[str, int]:
        # SCAN walks the whole keyspace: fine for /rooms (rate-limited per
        # client), not for a hot path. Hash tags keep each room's name intact.
        pattern = f"{self.keys.p}:{{*}}:members"
        with self._io.errors(write=False):
            names: list[bytes] = list(self._io.r.scan_iter(match=pattern, count=1000))
            pipe = self._io.r.pipeline(transaction=False)
            for name in names:
                pipe.hlen(name)
            counts: list[Any] = pipe.execute()
        start = len(self.keys.p) + 2
        out: dict[str, int] = {}
        for name, count in zip(names, counts, strict=True):
            if int(count) > 0:
                out[name.decode()[start : -len("}:members")]] = int(count)
        return out

    # -- sessions ----------------------------------------------------------------

    def save_session(self, record: SessionRecord) -> None:
        redis_sessions.save_session(self._io, record)

    def refresh_sessions(self, tokens: Sequence[str]) -> list[str]:
        return redis_sessions.refresh_sessions(self._io, tokens)

    def drop_session(self, token: str) -> bool:
        return redis_sessions.drop_session(self._io, token)

    def take_session(self, token: str) -> SessionRecord | None:
        return redis_sessions.take_session(self._io, token)

    # -- private lines ----------------------------------------------------------------

    def send_private(self, broker: str, payload: bytes) -> str:
        k = self.keys
        entry = self._io.call(
            "zc_send_private",
            [k.brokers, k.inbox(broker)],
            [*self._io.fence_args(), self.settings.inbox_lines, payload, k.bell(broker)],
            write=True,
        )
        return str(entry.decode())

    def read_inbox(self, after: str, count: int = 100) -> list[InboxLine]:
        with self._io.errors(write=False):
            entries: Any = self._io.r.xrange(
                self.keys.inbox(self._io.broker), f"({after}", "+", count=count
            )
        return [InboxLine(eid.decode(), stream_field(fields, b"d")) for eid, fields in entries]

    def close(self) -> None:
        self._io.r.close()


def _hole(fields: Any) -> int:
    """How many seqs a hole entry (field ``h``, made when a failover lost
    lines) stands for; 0 for a line."""
    if isinstance(fields, dict):
        return int(fields.get(b"h", 0))
    return int(fields[1]) if fields and fields[0] == b"h" else 0


def _conforms(engine: RedisEngine) -> Engine:
    """Never called: mypy checks here that RedisEngine implements Engine."""
    return engine
