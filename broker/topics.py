"""Room topics: where they are kept (docs/PROTOCOL.md "Room topics").

A topic belongs to the room, not to its members: it outlives everyone
leaving, and with :class:`SqliteTopics` a broker restart. Topics change
rarely (a person types ``/topic``), so the SQLite store commits each change
at once, in the loop, before the change is published: nobody sees a topic
the store does not hold. In cluster mode :class:`EngineTopics` keeps them in
the engine every broker shares (docs/CLUSTER.md "Room topics").
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgspec

from broker.history import StorageError

__all__ = [
    "EngineTopics",
    "MemoryTopics",
    "RoomTopic",
    "SqliteTopics",
    "TopicRecords",
    "TopicStore",
    "TopicsUnavailable",
]


class TopicsUnavailable(StorageError):
    """The store could not keep a topic (disk full, I/O error): nothing changed."""


@dataclass(frozen=True, slots=True)
class RoomTopic:
    """A room's topic, who set it and when (seconds since the epoch)."""

    text: str
    nick: str
    ts: float


_NONE = RoomTopic(text="", nick="", ts=0.0)


class TopicStore(Protocol):
    """Storage for the topic of every room."""

    def get(self, room: str) -> RoomTopic:
        """The topic of ``room`` (text "" when it has none)."""
        ...

    def set(self, room: str, topic: RoomTopic) -> None:
        """Store a new topic durably before returning (text "" clears it);
        raises TopicsUnavailable if it could not."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class MemoryTopics:
    """Topics for as long as the broker runs."""

    def __init__(self) -> None:
        self._topics: dict[str, RoomTopic] = {}

    def get(self, room: str) -> RoomTopic:
        return self._topics.get(room, _NONE)

    def set(self, room: str, topic: RoomTopic) -> None:
        if topic.text:
            self._topics[room] = topic
        else:
            self._topics.pop(room, None)

    def close(self) -> None:
        self._topics.clear()


class SqliteTopics:
    """Topics in a ``topics`` table, normally in the history database file
    (its own connection: the history store's batching is not involved)."""

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            # The history store's connection writes to the same file; wait for it
            # rather than fail (its transactions last a commit, milliseconds).
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS topics ("
                " room TEXT PRIMARY KEY, text TEXT NOT NULL, nick TEXT NOT NULL, ts REAL NOT NULL"
                ") WITHOUT ROWID"
            )
            rows = self._db.execute("SELECT room, text, nick, ts FROM topics").fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the topics in {path}: {exc}") from exc
        self._cache: dict[str, RoomTopic] = {
            room: RoomTopic(text=text, nick=nick, ts=ts) for room, text, nick, ts in rows
        }

    def get(self, room: str) -> RoomTopic:
        return self._cache.get(room, _NONE)

    def set(self, room: str, topic: RoomTopic) -> None:
        try:
            if topic.text:
                self._db.execute(
                    "INSERT OR REPLACE INTO topics (room, text, nick, ts) VALUES (?, ?, ?, ?)",
                    (room, topic.text, topic.nick, topic.ts),
                )
            else:
                self._db.execute("DELETE FROM topics WHERE room = ?", (room,))
        except sqlite3.Error as exc:
            raise TopicsUnavailable(str(exc)) from exc
        if topic.text:
            self._cache[room] = topic
        else:
            self._cache.pop(room, None)

    def close(self) -> None:
        self._db.close()


class TopicRecords(Protocol):
    """Where a cluster engine keeps each room's topic as an opaque payload
    (:class:`broker.engine.redis_topics.RedisTopics`)."""

    def get(self, room: str) -> bytes | None:
        """The payload stored for ``room``, None for none."""
        ...

    def set(self, room: str, payload: bytes | None) -> None:
        """Store ``payload`` for ``room`` (None removes it)."""
        ...

    def close(self) -> None:
        """Release the records."""
        ...


class EngineTopics:
    """Topics in a cluster engine, shared by every broker: read from it each
    time (a join or a ``topic`` query, never a line), so a broker started
    after a topic was set, or one that missed its notice, still knows it.

    The engine's errors pass through: the cluster core answers them as
    ``unavailable`` (and a fenced write makes the broker register again)."""

    def __init__(self, records: TopicRecords) -> None:
        self._records = records

    def get(self, room: str) -> RoomTopic:
        payload = self._records.get(room)
        if payload is None:
            return _NONE
        try:
            return msgspec.json.decode(payload, type=RoomTopic)
        except msgspec.DecodeError:  # not a topic (another version wrote it): none
            return _NONE

    def set(self, room: str, topic: RoomTopic) -> None:
        self._records.set(room, msgspec.json.encode(topic) if topic.text else None)

    def close(self) -> None:
        self._records.close()
