"""Session records, so that a client can resume on any broker
(docs/CLUSTER.md "Sessions: resuming on another broker")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from broker.engine.api import SessionRecord
from broker.engine.redis_io import RedisIO, text

__all__ = ["drop_session", "refresh_sessions", "save_session", "take_session"]


def save_session(io: RedisIO, record: SessionRecord) -> None:
    k = io.keys
    io.call(
        "zc_save_session",
        [k.session(record.token), k.brokers, k.broker(io.broker, "sessions")],
        [
            *io.fence_args(),
            io.settings.session_ttl,
            record.token,
            record.nick,
            record.nick_key,
            "\n".join(record.rooms),
            record.key,
        ],
        write=True,
    )


def refresh_sessions(io: RedisIO, tokens: Sequence[str]) -> list[str]:
    if not tokens:
        return []
    k = io.keys
    lost = io.call(
        "zc_refresh_sessions",
        [k.brokers, *(k.session(t) for t in tokens)],
        [*io.fence_args(), io.settings.session_ttl],
        write=True,
    )
    return [tokens[int(i)] for i in lost]


def drop_session(io: RedisIO, token: str) -> bool:
    k = io.keys
    done = io.call(
        "zc_drop_session",
        [k.session(token), k.broker(io.broker, "sessions")],
        [io.broker, token],
        write=True,
    )
    return bool(done)


def take_session(io: RedisIO, token: str) -> SessionRecord | None:
    k = io.keys
    for _ in range(3):  # another broker may take it between our two steps
        with io.errors(write=False):
            raw: Any = io.r.hgetall(k.session(token))
        if not raw:
            return None
        fields = {text(name): text(value) for name, value in raw.items()}
        rooms = tuple(r for r in fields.get("rooms", "").split("\n") if r)
        record = SessionRecord(
            token,
            io.broker,
            fields.get("nick", ""),
            fields.get("nick_key", ""),
            rooms,
            fields.get("key", ""),
        )
        old = fields.get("broker", "")
        if old == io.broker:
            return record
        taken = io.call(
            "zc_take_session",
            [
                k.session(token),
                k.brokers,
                k.broker(io.broker, "sessions"),
                k.broker(old, "sessions"),
                k.broker(io.broker, "nicks"),
                k.broker(old, "nicks"),
                k.broker(io.broker, "rooms"),
                k.nick(record.nick_key),
                *(k.members(room) for room in rooms),
            ],
            [
                *io.fence_args(),
                old,
                token,
                io.settings.nick_lease,
                io.settings.session_ttl,
                record.nick_key,
                record.nick,
                *rooms,
            ],
            write=True,
        )
        if taken:
            return record
    return None
