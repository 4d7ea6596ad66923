"""Plumbing of the Redis engine: settings, key names, start-up checks, and
the one place where redis-py's errors become the engine's (docs/CLUSTER.md)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

import redis
from redis import exceptions as rx

from broker.engine.api import (
    EngineConfigError,
    EngineError,
    EngineUnavailable,
    Fenced,
    Member,
)
from broker.engine.url import EngineURL

__all__ = [
    "EngineSettings",
    "Keys",
    "RedisIO",
    "check_server",
    "new_broker_id",
    "new_epoch",
    "parse_member",
    "stream_field",
    "text",
]

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
    ``replicas``: acknowledge a line only once this many replicas have it
    (Redis ``WAIT``, after each turn's appends); ``replica_wait`` (ms): how
    long one turn waits for them, at most (docs/CLUSTER.md "Failover").
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
        replicas: int = 0,
        replica_wait: int = 500,
    ) -> None:
        if key_memory < 1 or history_lines < 1 or inbox_lines < 1:
            raise ValueError("history_lines, key_memory and inbox_lines must be at least 1")
        if replicas < 0:
            raise ValueError("replicas must be at least 0")
        if replicas and not 0 < replica_wait < timeout * 1000:
            raise ValueError("replica_wait must be above 0 and below the timeout")
        self.prefix = prefix
        self.timeout = timeout
        self.broker_ttl = broker_ttl
        self.nick_lease = nick_lease
        self.reap_lock = reap_lock
        self.history_lines = history_lines
        self.key_memory = key_memory
        self.inbox_lines = inbox_lines
        self.session_ttl = session_ttl
        self.replicas = replicas
        self.replica_wait = replica_wait


class Keys:
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


class RedisIO:
    """One Redis connection with the engine's error rules, function calls
    (reloading the library if Redis lost it) and the broker's identity."""

    def __init__(self, client: redis.Redis, url: EngineURL, settings: EngineSettings) -> None:
        self.r = client
        self.url = url
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.broker = new_broker_id()

    def load(self) -> None:
        """Load (or replace) the functions library."""
        self.r.function_load(_library(), replace=True)

    @contextmanager
    def errors(self, *, write: bool) -> Iterator[None]:
        """Turn redis-py's errors into the engine's (see broker.engine.api)."""
        try:
            yield
        except rx.ResponseError as exc:
            raise self.translate(exc) from None
        except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
            # a lost connection or a timeout after sending: the write may have run
            raise EngineUnavailable(
                f"Redis at {self.url.display}: {exc}", indeterminate=write
            ) from None

    def translate(self, exc: Exception) -> EngineError:
        text = str(exc)
        if text.startswith("FENCED"):
            return Fenced(f"broker {self.broker}: {text[7:]}")
        if isinstance(exc, _RETRYABLE_ERRORS):  # redis-py strips their prefix
            return EngineUnavailable(f"Redis at {self.url.display}: {type(exc).__name__}: {text}")
        if text.startswith(_RETRYABLE_PREFIXES):
            return EngineUnavailable(f"Redis at {self.url.display}: {text}")
        return EngineError(f"Redis at {self.url.display}: {text}")

    def call(self, fn: str, keys: Sequence[str], args: Sequence[Any], *, write: bool) -> Any:
        """One function call, reloading the library once if Redis lost it
        (a restart without persistence)."""
        with self.errors(write=write):
            try:
                return self.r.fcall(fn, len(keys), *keys, *args)
            except rx.ResponseError as exc:
                if "Function not found" not in str(exc):
                    raise
                self.load()
                return self.r.fcall(fn, len(keys), *keys, *args)

    def pipelined(
        self,
        calls: Sequence[tuple[str, Sequence[str], Sequence[Any]]],
        *,
        write: bool,
        wait: tuple[int, int] | None = None,
    ) -> list[Any]:
        """Several function calls in one round trip; each result or its
        exception. ``wait`` (replicas, ms): a ``WAIT`` after them, in the same
        round trip; its answer (how many replicas have the writes) comes last."""
        with self.errors(write=write):
            for attempt in range(2):
                pipe = self.r.pipeline(transaction=False)
                for fn, keys, args in calls:
                    pipe.fcall(fn, len(keys), *keys, *args)
                if wait is not None:
                    pipe.execute_command("WAIT", *wait)  # type: ignore[no-untyped-call]
                results: list[Any] = pipe.execute(raise_on_error=False)
                missing = any(
                    isinstance(r, rx.ResponseError) and "Function not found" in str(r)
                    for r in results
                )
                if not missing or attempt:
                    return results
                # nothing ran (every call failed alike): load and run again
                self.load()
        raise AssertionError("unreachable")

    def fence_args(self) -> list[Any]:
        """The arguments every fenced function starts with: who asks, and the lease."""
        return [self.broker, self.settings.broker_ttl]

    def holder(self, session: str) -> str:
        """The value of a nickname lease held by a session of this broker."""
        return f"{self.broker}/{session}"


def new_broker_id() -> str:
    """A fresh broker id (a fenced id is never used again)."""
    return f"b{secrets.token_hex(6)}"


def stream_field(fields: Any, name: bytes) -> bytes:
    """A field of a stream entry (a dict from XRANGE, a flat list in a function reply)."""
    if isinstance(fields, dict):
        return bytes(fields[name])
    for i in range(0, len(fields), 2):
        if fields[i] == name:
            return bytes(fields[i + 1])
    raise EngineError(f"stream entry without field {name!r}")


def text(value: object) -> str:
    """A reply item as text (replies are bytes: the client does not decode)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_member(nick_key: bytes, value: bytes) -> tuple[int, Member]:
    """A members-hash entry (``order\\nbroker\\nsession\\nnick``) and its joining order."""
    order, broker, session, nick = value.decode().split("\n", 3)
    return int(order), Member(nick_key.decode(), nick, broker, session)
