"""The Redis implementation of :class:`~broker.engine.api.Engine` (docs/CLUSTER.md).

Every write is one Redis 7 Function call (``zchat.lua`` beside this file),
atomic on the server; calls for several rooms go out pipelined in one round
trip. Functions rather than EVALSHA scripts: redis-py checks a pipeline's
scripts with an extra SCRIPT EXISTS round trip on every execute, while
functions are loaded once and persist with the data (AOF).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

import redis
from redis import exceptions as rx

from broker.engine.api import (
    AppendResult,
    Duplicate,
    Engine,
    EngineConfigError,
    EngineError,
    EngineUnavailable,
    Fenced,
    History,
    InboxLine,
    Member,
    NewLine,
    ReapedMember,
    ReapReport,
    RoomMeta,
    SessionRecord,
    StoredLine,
)
from broker.engine.url import EngineURL, parse_url

__all__ = ["EngineSettings", "RedisEngine", "check_server", "new_epoch"]

log = logging.getLogger(__name__)

#: Errors after which the same request may succeed later (Redis loading its
#: data, a script running too long, a replica promoted mid-request, out of memory).
_RETRYABLE_PREFIXES = ("LOADING", "BUSY", "MASTERDOWN", "READONLY", "OOM", "TRYAGAIN", "NOREPLICAS")


_RETRYABLE_ERRORS = (
    rx.OutOfMemoryError,
    rx.ReadOnlyError,
    rx.MasterDownError,
    rx.TryAgainError,
    rx.BusyLoadingError,
)


def new_epoch() -> str:
    """A fresh epoch: 16 random lowercase hex digits (docs/PROTOCOL.md epoch)."""
    return secrets.token_hex(8)


def _library() -> str:
    return resources.files("broker.engine").joinpath("zchat.lua").read_text("utf-8")


class EngineSettings:
    """Timings and sizes of the engine; the defaults suit a LAN.

    ``broker_ttl`` (ms): a broker whose heartbeat is older is dead (reaped,
    fenced). ``nick_lease`` (ms): a nickname lease lapses unless refreshed.
    ``session_ttl`` (ms): a session record lapses unless refreshed: it must
    outlive a broker's death long enough for its clients to resume elsewhere.
    """

    def __init__(
        self,
        *,
        prefix: str = "zc",
        timeout: float = 2.0,
        broker_ttl: int = 5000,
        nick_lease: int = 15000,
        reap_lock: int = 30000,
        history_lines: int = 10_000,
        key_memory: int = 10_000,
        inbox_lines: int = 10_000,
        session_ttl: int = 60_000,
    ) -> None:
        if key_memory < 1 or history_lines < 1 or inbox_lines < 1:
            raise ValueError("history_lines, key_memory and inbox_lines must be at least 1")
        self.prefix = prefix
        self.timeout = timeout
        self.broker_ttl = broker_ttl
        self.nick_lease = nick_lease
        self.reap_lock = reap_lock
        self.history_lines = history_lines
        self.key_memory = key_memory
        self.inbox_lines = inbox_lines
        self.session_ttl = session_ttl


class _Keys:
    """Key and channel names; every per-room key carries the hash tag ``{room}``."""

    def __init__(self, prefix: str) -> None:
        self.p = prefix
        self.brokers = f"{prefix}:brokers"

    def room(self, room: str) -> tuple[str, str, str]:
        if "{" in room or "}" in room:
            raise ValueError(f"room name {room!r} is not canonical")
        return f"{self.p}:{{{room}}}:meta", f"{self.p}:{{{room}}}:log", f"{self.p}:{{{room}}}:keys"

    def members(self, room: str) -> str:
        return f"{self.p}:{{{room}}}:members"

    def bus(self, room: str) -> str:
        return f"{self.p}:{{{room}}}:bus"

    def nick(self, nick_key: str) -> str:
        return f"{self.p}:nick:{nick_key}"

    def broker(self, broker: str, what: str) -> str:
        return f"{self.p}:broker:{broker}:{what}"

    def inbox(self, broker: str) -> str:
        return f"{self.p}:inbox:{broker}"

    def bell(self, broker: str) -> str:
        return f"{self.p}:bell:{broker}"

    def session(self, token: str) -> str:
        return f"{self.p}:session:{token}"

    def reaping(self, broker: str) -> str:
        return f"{self.p}:reaping:{broker}"


def check_server(client: redis.Redis) -> list[str]:
    """Refuse a Redis that would lose data silently; returns warnings.

    Raises EngineConfigError for Redis older than 7.0 (Functions) or a
    ``maxmemory-policy`` other than ``noeviction`` (an evicted nickname lease
    or room meta would break uniqueness or numbering without a trace).
    Warns when neither AOF nor RDB snapshots persist anything.
    """
    info: dict[str, Any] = client.info()
    version = str(info.get("redis_version", "0"))
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    if major < 7:
        raise EngineConfigError(
            f"Redis {version} is too old: cluster mode needs Redis 7.0 or newer"
        )
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if policy != "noeviction":
        raise EngineConfigError(
            f"Redis maxmemory-policy is {policy!r}: it may evict chat data; "
            "set `maxmemory-policy noeviction`"
        )
    warnings: list[str] = []
    if not info.get("aof_enabled"):
        warnings.append(
            "Redis runs without AOF (appendonly no): a Redis restart loses recent lines "
            "and every room's numbering restarts (new epoch); set `appendonly yes` "
            "and `appendfsync always`"
        )
    return warnings


class RedisEngine:
    """The cluster engine on one Redis primary (directly or through Sentinel).

    Not thread-safe: one broker loop uses it (the bus reader has its own
    connection). Construct with :meth:`connect`.
    """

    def __init__(
        self, client: redis.Redis, url: EngineURL, settings: EngineSettings | None = None
    ) -> None:
        self._r = client
        self.url = url
        self.settings = settings or EngineSettings()
        self.keys = _Keys(self.settings.prefix)
        self._broker = f"b{secrets.token_hex(6)}"
        #: The highest (epoch, seq) seen per room, to notice a seq that went
        #: down under the same epoch (a failover to a replica that missed writes).
        self._seen: dict[str, RoomMeta] = {}
        self.warnings: list[str] = []

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
            engine._load()
        except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
            client.close()
            reason = " ".join(str(exc).split())  # one line, whatever redis-py says
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
        return self._broker

    def _load(self) -> None:
        self._r.function_load(_library(), replace=True)

    # -- plumbing ---------------------------------------------------------

    @contextmanager
    def _errors(self, *, write: bool) -> Iterator[None]:
        """Turn redis-py's errors into the engine's (see broker.engine.api)."""
        try:
            yield
        except rx.ResponseError as exc:
            raise self._translate(exc) from None
        except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
            # a lost connection or a timeout after sending: the write may have run
            raise EngineUnavailable(
                f"Redis at {self.url.display}: {exc}", indeterminate=write
            ) from None

    def _translate(self, exc: Exception) -> EngineError:
        text = str(exc)
        if text.startswith("FENCED"):
            return Fenced(f"broker {self._broker}: {text[7:]}")
        if isinstance(exc, _RETRYABLE_ERRORS):  # redis-py strips their prefix
            return EngineUnavailable(f"Redis at {self.url.display}: {type(exc).__name__}: {text}")
        if text.startswith(_RETRYABLE_PREFIXES):
            return EngineUnavailable(f"Redis at {self.url.display}: {text}")
        return EngineError(f"Redis at {self.url.display}: {text}")

    def _call(self, fn: str, keys: Sequence[str], args: Sequence[Any], *, write: bool) -> Any:
        """One function call, reloading the library once if Redis lost it
        (a restart without persistence)."""
        with self._errors(write=write):
            try:
                return self._r.fcall(fn, len(keys), *keys, *args)
            except rx.ResponseError as exc:
                if "Function not found" not in str(exc):
                    raise
                self._load()
                return self._r.fcall(fn, len(keys), *keys, *args)

    def _pipelined(
        self, calls: Sequence[tuple[str, Sequence[str], Sequence[Any]]], *, write: bool
    ) -> list[Any]:
        """Several function calls in one round trip; each result or its exception."""
        with self._errors(write=write):
            for attempt in range(2):
                pipe = self._r.pipeline(transaction=False)
                for fn, keys, args in calls:
                    pipe.fcall(fn, len(keys), *keys, *args)
                results: list[Any] = pipe.execute(raise_on_error=False)
                missing = any(
                    isinstance(r, rx.ResponseError) and "Function not found" in str(r)
                    for r in results
                )
                if not missing or attempt:
                    return results
                # nothing ran (every call failed alike): load and run again
                self._load()
        raise AssertionError("unreachable")

    def _fence_args(self) -> list[Any]:
        return [self._broker, self.settings.broker_ttl]

    # -- registry -----------------------------------------------------------

    def register(self) -> None:
        while not self._call("zc_register", [self.keys.brokers], [self._broker], write=True):
            self._broker = f"b{secrets.token_hex(6)}"  # taken (a fenced id stays dead)

    def renew_id(self) -> None:
        """Take a new broker id (after Fenced) without registering it yet."""
        self._broker = f"b{secrets.token_hex(6)}"

    def heartbeat(self) -> None:
        self._call("zc_heartbeat", [self.keys.brokers], self._fence_args(), write=True)

    def dead_brokers(self) -> list[str]:
        ids = self._call("zc_dead", [self.keys.brokers], [self.settings.broker_ttl], write=False)
        return [i.decode() for i in ids]

    def reap(self, broker: str) -> ReapReport | None:
        k = self.keys
        with self._errors(write=True):
            won = self._r.set(k.reaping(broker), self._broker, nx=True, px=self.settings.reap_lock)
            if not won or self._r.zscore(k.brokers, broker) is None:
                return None
            rooms = sorted(_text(r) for r in self._r.smembers(k.broker(broker, "rooms")))
            nicks = sorted(_text(n) for n in self._r.smembers(k.broker(broker, "nicks")))
            tokens = sorted(_text(t) for t in self._r.smembers(k.broker(broker, "sessions")))
        removed = self._pipelined(
            [("zc_reap_room", [k.members(room)], [broker]) for room in rooms], write=True
        )
        members: list[ReapedMember] = []
        for room, pairs in zip(rooms, removed, strict=True):
            if isinstance(pairs, Exception):
                raise self._translate(pairs)
            for i in range(0, len(pairs), 2):
                members.append(ReapedMember(room, _member(pairs[i], pairs[i + 1])[1]))
        with self._errors(write=True):
            holders = self._r.mget([k.nick(n) for n in nicks]) if nicks else []
        freed = [
            (nick, holder)
            for nick, holder in zip(nicks, holders, strict=True)
            if holder is not None and _text(holder).startswith(f"{broker}/")
        ]
        released = self._pipelined(
            [("zc_release_nick", [k.nick(n), k.broker(broker, "nicks")], [h, n]) for n, h in freed],
            write=True,
        )
        # sessions not taken over by now are gone: their clients start afresh
        dropped = self._pipelined(
            [
                ("zc_drop_session", [k.session(t), k.broker(broker, "sessions")], [broker, t])
                for t in tokens
            ],
            write=True,
        )
        with self._errors(write=True):
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(
                k.broker(broker, "rooms"),
                k.broker(broker, "nicks"),
                k.broker(broker, "sessions"),
                k.inbox(broker),
            )
            pipe.zrem(k.brokers, broker)
            pipe.execute()
        return ReapReport(
            broker,
            tuple(members),
            tuple(n for (n, _), ok in zip(freed, released, strict=True) if ok == 1),
            tuple(t for t, ok in zip(tokens, dropped, strict=True) if ok == 1),
        )

    # -- rooms ----------------------------------------------------------------

    def append(
        self, batches: Mapping[str, Sequence[NewLine]]
    ) -> dict[str, AppendResult | EngineUnavailable]:
        s = self.settings
        rooms = [room for room, lines in batches.items() if lines]
        calls = []
        for room in rooms:
            args: list[Any] = [
                *self._fence_args(),
                new_epoch(),
                s.history_lines,
                s.key_memory,
                self.keys.bus(room),
            ]
            for line in batches[room]:
                args += [line.key or "", line.payload]
            calls.append(("zc_append", [*self.keys.room(room), self.keys.brokers], args))
        results = self._pipelined(calls, write=True)
        out: dict[str, AppendResult | EngineUnavailable] = {}
        for room, result in zip(rooms, results, strict=True):
            if isinstance(result, Exception):
                error = self._translate(result)
                if isinstance(error, EngineUnavailable):
                    out[room] = error
                    continue
                raise error  # Fenced (for every room alike) or a bug
            epoch = result[0].decode()
            seqs = tuple(abs(int(s)) for s in result[1])
            dups = tuple(Duplicate(i, -int(s)) for i, s in enumerate(result[1]) if int(s) < 0)
            if len(dups) < len(seqs):  # new lines: the newest is the room's seq now
                epoch = self._observe(room, epoch, max(seqs))
            out[room] = AppendResult(epoch, seqs, dups)
        return out

    def fetch(
        self, room: str, after: int, before: int | None, limit: int, *, forward: bool = False
    ) -> History:
        args = [new_epoch(), after, -1 if before is None else before, limit, int(forward)]
        epoch, seq, missed, entries = self._call(
            "zc_fetch", self.keys.room(room), args, write=False
        )
        lines = [StoredLine(int(eid.split(b"-", 1)[0]), _field(f, b"d")) for eid, f in entries]
        if not forward:
            lines.reverse()
        meta = RoomMeta(int(seq), self._observe(room, epoch.decode(), int(seq)))
        return History(tuple(lines), int(missed), meta)

    def meta(self, rooms: Sequence[str]) -> dict[str, RoomMeta]:
        results = self._pipelined(
            [("zc_meta", self.keys.room(room), [new_epoch()]) for room in rooms], write=False
        )
        out: dict[str, RoomMeta] = {}
        for room, result in zip(rooms, results, strict=True):
            if isinstance(result, Exception):
                raise self._translate(result)
            seq = int(result[1])
            out[room] = RoomMeta(seq, self._observe(room, result[0].decode(), seq))
        return out

    def _observe(self, room: str, epoch: str, seq: int) -> str:
        """Track the room's numbering; a seq lower than one seen under the same
        epoch means Redis lost writes (failover): declare a new epoch."""
        seen = self._seen.get(room)
        if seen is not None and seen.epoch == epoch and seq < seen.seq:
            log.warning("room %s: seq went down from %d to %d: new epoch", room, seen.seq, seq)
            bumped = self._call(
                "zc_bump_epoch", [self.keys.room(room)[0]], [epoch, new_epoch()], write=True
            )
            epoch = bumped.decode()
        if seen is None or seen.epoch != epoch or seq > seen.seq:
            self._seen[room] = RoomMeta(seq, epoch)
        return epoch

    def publish(self, room: str, payload: bytes) -> None:
        self._call(
            "zc_publish",
            [self.keys.brokers],
            [*self._fence_args(), self.keys.bus(room), payload],
            write=True,
        )

    # -- nicknames --------------------------------------------------------------

    def _holder(self, session: str) -> str:
        return f"{self._broker}/{session}"

    def claim_nick(self, nick_key: str, session: str) -> bool:
        k = self.keys
        won = self._call(
            "zc_claim_nick",
            [k.nick(nick_key), k.brokers, k.broker(self._broker, "nicks")],
            [*self._fence_args(), self._holder(session), self.settings.nick_lease, nick_key],
            write=True,
        )
        return bool(won)

    def refresh_nicks(self, leases: Mapping[str, str]) -> list[str]:
        if not leases:
            return []
        k = self.keys
        nick_keys = list(leases)
        args: list[Any] = [*self._fence_args(), self.settings.nick_lease]
        for nick_key in nick_keys:
            args += [nick_key, self._holder(leases[nick_key])]
        lost = self._call(
            "zc_refresh_nicks",
            [k.brokers, k.broker(self._broker, "nicks"), *(k.nick(n) for n in nick_keys)],
            args,
            write=True,
        )
        return [nick_keys[int(i)] for i in lost]

    def release_nick(self, nick_key: str, session: str) -> bool:
        k = self.keys
        done = self._call(
            "zc_release_nick",
            [k.nick(nick_key), k.broker(self._broker, "nicks")],
            [self._holder(session), nick_key],
            write=True,
        )
        return bool(done)

    def nick_holder(self, nick_key: str) -> tuple[str, str] | None:
        """The (broker, session) holding a nickname, if any (private lines)."""
        with self._errors(write=False):
            value = self._r.get(self.keys.nick(nick_key))
        if value is None:
            return None
        broker, _, session = _text(value).partition("/")
        return broker, session

    # -- membership ---------------------------------------------------------------

    def join(self, room: str, member: Member, notice: bytes | None = None) -> bool:
        k = self.keys
        added = self._call(
            "zc_join",
            [k.members(room), k.room(room)[0], k.brokers, k.broker(self._broker, "rooms")],
            [
                *self._fence_args(),
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
        done = self._call(
            "zc_leave",
            [k.members(room)],
            [self._broker, member.nick_key, member.session, k.bus(room), notice or b""],
            write=True,
        )
        return bool(done)

    def members(self, room: str) -> list[Member]:
        with self._errors(write=False):
            raw: Any = self._r.hgetall(self.keys.members(room))
        ordered = sorted((_member(n, v) for n, v in raw.items()), key=lambda pair: pair[0])
        return [member for _, member in ordered]

    # -- sessions -----------------------------------------------------------------------

    def save_session(self, record: SessionRecord) -> None:
        k = self.keys
        self._call(
            "zc_save_session",
            [k.session(record.token), k.brokers, k.broker(self._broker, "sessions")],
            [
                *self._fence_args(),
                self.settings.session_ttl,
                record.token,
                record.nick,
                record.nick_key,
                "\n".join(record.rooms),
                record.key,
            ],
            write=True,
        )

    def refresh_sessions(self, tokens: Sequence[str]) -> list[str]:
        if not tokens:
            return []
        k = self.keys
        lost = self._call(
            "zc_refresh_sessions",
            [k.brokers, *(k.session(t) for t in tokens)],
            [*self._fence_args(), self.settings.session_ttl],
            write=True,
        )
        return [tokens[int(i)] for i in lost]

    def drop_session(self, token: str) -> bool:
        k = self.keys
        done = self._call(
            "zc_drop_session",
            [k.session(token), k.broker(self._broker, "sessions")],
            [self._broker, token],
            write=True,
        )
        return bool(done)

    def take_session(self, token: str) -> SessionRecord | None:
        k = self.keys
        for _ in range(3):  # another broker may take it between our two steps
            with self._errors(write=False):
                raw: Any = self._r.hgetall(k.session(token))
            if not raw:
                return None
            fields = {_text(name): _text(value) for name, value in raw.items()}
            rooms = tuple(r for r in fields.get("rooms", "").split("\n") if r)
            record = SessionRecord(
                token,
                self._broker,
                fields.get("nick", ""),
                fields.get("nick_key", ""),
                rooms,
                fields.get("key", ""),
            )
            old = fields.get("broker", "")
            if old == self._broker:
                return record
            taken = self._call(
                "zc_take_session",
                [
                    k.session(token),
                    k.brokers,
                    k.broker(self._broker, "sessions"),
                    k.broker(old, "sessions"),
                    k.broker(self._broker, "nicks"),
                    k.broker(old, "nicks"),
                    k.broker(self._broker, "rooms"),
                    k.nick(record.nick_key),
                    *(k.members(room) for room in rooms),
                ],
                [
                    *self._fence_args(),
                    old,
                    token,
                    self.settings.nick_lease,
                    self.settings.session_ttl,
                    record.nick_key,
                    record.nick,
                    *rooms,
                ],
                write=True,
            )
            if taken:
                return record
        return None

    # -- private lines ----------------------------------------------------------------

    def send_private(self, broker: str, payload: bytes) -> str:
        k = self.keys
        entry = self._call(
            "zc_send_private",
            [k.brokers, k.inbox(broker)],
            [*self._fence_args(), self.settings.inbox_lines, payload, k.bell(broker)],
            write=True,
        )
        return str(entry.decode())

    def read_inbox(self, after: str, count: int = 100) -> list[InboxLine]:
        with self._errors(write=False):
            entries: Any = self._r.xrange(
                self.keys.inbox(self._broker), f"({after}", "+", count=count
            )
        return [InboxLine(eid.decode(), _field(fields, b"d")) for eid, fields in entries]

    def close(self) -> None:
        self._r.close()


def _field(fields: Any, name: bytes) -> bytes:
    """A field of a stream entry (a dict from XRANGE, a flat list in a function reply)."""
    if isinstance(fields, dict):
        return bytes(fields[name])
    for i in range(0, len(fields), 2):
        if fields[i] == name:
            return bytes(fields[i + 1])
    raise EngineError(f"stream entry without field {name!r}")


def _text(value: object) -> str:
    """A reply item as text (replies are bytes: the client does not decode)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _member(nick_key: bytes, value: bytes) -> tuple[int, Member]:
    order, broker, session, nick = value.decode().split("\n", 3)
    return int(order), Member(nick_key.decode(), nick, broker, session)


def _conforms(engine: RedisEngine) -> Engine:
    """Never called: mypy checks here that RedisEngine implements Engine."""
    return engine
