"""Room topics in Redis, so that every broker of a cluster knows them and
they survive broker restarts (docs/CLUSTER.md "Room topics").

One string per room, ``<prefix>:{R}:topic`` (the room's hash tag, beside its
other keys), holding an opaque payload: the broker decides what a topic is
(broker/topics.py :class:`~broker.topics.EngineTopics`), as it does for lines.
A topic is written by one short script that first checks this broker's
lease, as every engine write does: a broker paused past its lease never sets
a topic as a ghost. Not one of the functions in ``zchat.lua``: a topic is a
single key, and its write runs alone, never in a room batch's pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.engine.redis_io import RedisIO

if TYPE_CHECKING:
    from broker.engine.redis_engine import RedisEngine

__all__ = ["RedisTopics"]

# KEYS: brokers, topic  ARGV: broker, ttl_ms, payload ("" clears)
# The lease check is zchat.lua's `alive`, on Redis's clock.
_SET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not beat or now - tonumber(beat) > tonumber(ARGV[2]) then
  return redis.error_reply('FENCED this broker\\'s lease expired; register again')
end
if ARGV[3] == '' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], ARGV[3]) end
return 1
"""


class RedisTopics:
    """Each room's topic payload on the engine's connection (the broker's loop
    is its only user, as for :class:`~broker.engine.RedisEngine`).

    Raises what the engine raises: :class:`~broker.engine.EngineUnavailable`
    when Redis is out of reach, :class:`~broker.engine.Fenced` for a write
    after this broker's lease expired."""

    def __init__(self, io: RedisIO) -> None:
        self._io = io
        self._set = io.r.register_script(_SET)

    @classmethod
    def of(cls, engine: RedisEngine) -> RedisTopics:
        """The topics on ``engine``'s connection, under its key prefix and broker id."""
        return cls(engine._io)

    def _key(self, room: str) -> str:
        if "{" in room or "}" in room:
            raise ValueError(f"room name {room!r} is not canonical")
        return f"{self._io.keys.p}:{{{room}}}:topic"

    def get(self, room: str) -> bytes | None:
        """The payload of ``room``'s topic, None when it has none."""
        with self._io.errors(write=False):
            value: Any = self._io.r.get(self._key(room))
        return None if value is None else bytes(value)

    def set(self, room: str, payload: bytes | None) -> None:
        """Store ``room``'s topic (None clears it); durable as Redis makes it
        (AOF) when this returns."""
        keys = [self._io.keys.brokers, self._key(room)]
        with self._io.errors(write=True):
            self._set(keys=keys, args=[*self._io.fence_args(), payload or b""])

    def close(self) -> None:
        """Nothing to release: the connection is the engine's."""
