"""The reaper: removes a dead broker's members, nicknames and sessions
(docs/CLUSTER.md "Brokers: heartbeat, fencing, reaper")."""

from __future__ import annotations

from broker.engine.api import ReapedMember, ReapReport
from broker.engine.redis_io import RedisIO, parse_member, text

__all__ = ["reap"]


def reap(io: RedisIO, broker: str) -> ReapReport | None:
    """See :meth:`broker.engine.api.Engine.reap`."""
    k = io.keys
    with io.errors(write=True):
        won = io.r.set(k.reaping(broker), io.broker, nx=True, px=io.settings.reap_lock)
        if not won or io.r.zscore(k.brokers, broker) is None:
            return None
        rooms = sorted(text(r) for r in io.r.smembers(k.broker(broker, "rooms")))
        nicks = sorted(text(n) for n in io.r.smembers(k.broker(broker, "nicks")))
        tokens = sorted(text(t) for t in io.r.smembers(k.broker(broker, "sessions")))
    removed = io.pipelined(
        [("zc_reap_room", [k.members(room)], [broker]) for room in rooms], write=True
    )
    members: list[ReapedMember] = []
    for room, pairs in zip(rooms, removed, strict=True):
        if isinstance(pairs, Exception):
            raise io.translate(pairs)
        for i in range(0, len(pairs), 2):
            members.append(ReapedMember(room, parse_member(pairs[i], pairs[i + 1])[1]))
    with io.errors(write=True):
        holders = io.r.mget([k.nick(n) for n in nicks]) if nicks else []
    freed = [
        (nick, holder)
        for nick, holder in zip(nicks, holders, strict=True)
        if holder is not None and text(holder).startswith(f"{broker}/")
    ]
    released = io.pipelined(
        [("zc_release_nick", [k.nick(n), k.broker(broker, "nicks")], [h, n]) for n, h in freed],
        write=True,
    )
    # sessions not taken over by now are gone: their clients start afresh
    dropped = io.pipelined(
        [
            ("zc_drop_session", [k.session(t), k.broker(broker, "sessions")], [broker, t])
            for t in tokens
        ],
        write=True,
    )
    with io.errors(write=True):
        pipe = io.r.pipeline(transaction=True)
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
