"""Cluster mode's engine layer: what the broker needs from a shared store
(:mod:`broker.engine.api`) and its Redis implementation (docs/CLUSTER.md).

- ``api``: the :class:`Engine` protocol, its value types and error tree.
- ``url``: engine URLs (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``).
- ``redis_engine``: :class:`RedisEngine` on Redis 7 Functions (``zchat.lua``),
  with ``redis_io`` (plumbing), ``redis_reaper`` and ``redis_sessions``.
- ``bus``: the pub/sub reader thread; ``relay``: the pure catch-up :class:`Relay`.
- ``follower``: the glue the broker's loop calls; ``breaker``: fail fast
  while the engine is out of reach.

The broker uses it in cluster mode (``broker/cluster.py``); SQLite mode does
not import it.
"""

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
from broker.engine.breaker import Breaker
from broker.engine.bus import BusReader
from broker.engine.follower import Follower
from broker.engine.redis_engine import EngineSettings, RedisEngine, check_server, new_epoch
from broker.engine.relay import Relay
from broker.engine.url import EngineURL, parse_url

__all__ = [
    "AppendResult",
    "Breaker",
    "BusReader",
    "Duplicate",
    "Engine",
    "EngineConfigError",
    "EngineError",
    "EngineSettings",
    "EngineURL",
    "EngineUnavailable",
    "Fenced",
    "Follower",
    "History",
    "InboxLine",
    "Member",
    "NewLine",
    "ReapReport",
    "ReapedMember",
    "RedisEngine",
    "Relay",
    "RoomMeta",
    "SessionRecord",
    "StoredLine",
    "check_server",
    "new_epoch",
    "parse_url",
]
