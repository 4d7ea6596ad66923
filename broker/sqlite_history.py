"""Room history in SQLite, the broker's default store (docs/PROTOCOL.md §8).

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. The
loop appends a batch of lines, commits them in one transaction (:meth:`flush`),
and only then publishes and acknowledges them. A commit has reached the
operating system when ``flush`` returns, so a ``kill -9`` of the broker loses
nothing that anyone has seen or that was acknowledged; an operating-system
crash or power cut can lose the last transactions (WAL without fsync per
commit), in which case clients resend the unacknowledged lines by key.

Speed (docs/PERFORMANCE.md): a commit writes only the lines (the rooms table
is written with each retention sweep), there is no index on ``ts``, and WAL
checkpoints run in a thread of their own with a connection of their own.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path

from protocol import ChatMessage

__all__ = ["SqliteHistory", "default_history_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    room   TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    id     TEXT    NOT NULL,
    nick   TEXT    NOT NULL,
    text   TEXT    NOT NULL,
    ts     REAL    NOT NULL,
    action INTEGER NOT NULL,
    key    TEXT,
    UNIQUE (room, seq)
);
-- No index on ts: it cost a quarter of every insert and served only the age
-- sweep, which finds its range by rowid instead (SqliteHistory.prune).
DROP INDEX IF EXISTS messages_ts;
CREATE TABLE IF NOT EXISTS rooms (
    room     TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;
"""

#: Seconds between retention sweeps; retention is not on the per-message path.
PRUNE_EVERY = 10.0
#: Seconds between the checkpoint thread's passive checkpoints.
CHECKPOINT_EVERY = 0.2
#: WAL pages after which a commit checkpoints in the loop itself: a fallback,
#: for when the checkpoint thread never finds the WAL quiet enough to restart it.
WAL_FALLBACK_PAGES = 4_000


def default_history_path() -> Path:
    """``$XDG_DATA_HOME/zmq-chat/history.sqlite3`` (``~/.local/share/...``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "zmq-chat" / "history.sqlite3"


class SqliteHistory:
    """Keeps each room's newest ``per_room`` lines, none older than ``max_age``
    seconds (0: no age limit). ``path`` may be ``":memory:"``."""

    def __init__(self, path: str | Path, per_room: int = 10_000, max_age: float = 0.0) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._per_room = per_room
        self._max_age = max_age
        self._pending: list[tuple[str, int, str, str, str, float, int, str | None]] = []
        # A room's last number is the larger of the rooms table (written only
        # with deletions, see _save_rooms) and its newest line still stored.
        self._last: dict[str, int] = dict(self._db.execute("SELECT room, last_seq FROM rooms"))
        for room, top in self._db.execute("SELECT room, MAX(seq) FROM messages GROUP BY room"):
            if top > self._last.get(room, 0):
                self._last[room] = top
        self._dirty: set[str] = set()
        self._next_prune = 0.0
        # (time.time() of a sweep, highest rowid then): every row up to that
        # rowid was stored by then, so the age sweep need look at no row past
        # the newest mark older than its cutoff (rowids grow with insertion).
        self._marks: deque[tuple[float, int]] = deque()
        self._swept_old = False
        # Checkpoints (copying the WAL into the database and syncing it, tens
        # of milliseconds on a slow disk) run in a thread of their own, so
        # they do not stall the loop and the lines waiting behind a commit.
        self._commits = 0
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if str(path) != ":memory:":
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_FALLBACK_PAGES}")
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, args=(str(path),), name="checkpoint", daemon=True
            )
            self._checkpointer.start()

    def last_seq(self, room: str) -> int:
        return self._last.get(room, 0)

    def append(self, message: ChatMessage, key: str | None) -> None:
        self._pending.append(
            (
                message.room,
                message.seq,
                message.id,
                message.nick,
                message.text,
                message.ts,
                int(message.action),
                key,
            )
        )
        self._last[message.room] = message.seq
        self._dirty.add(message.room)

    def flush(self) -> None:
        if not self._pending:
            return
        db = self._db
        db.execute("BEGIN")
        try:
            # Only the lines: the rooms table waits for the next sweep, which
            # saves a page write per commit (docs/PERFORMANCE.md).
            db.executemany("INSERT OR IGNORE INTO messages VALUES (?,?,?,?,?,?,?,?)", self._pending)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._pending.clear()
        self._commits += 1
        now = time.monotonic()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            self.prune()

    def prune(self, now: float | None = None) -> None:
        """Drop lines beyond the retention limits.

        The age limit is applied with a lag of at most one sweep interval: a
        sweep deletes old lines only up to the rowid recorded by the newest
        earlier sweep that is itself past the cutoff (no index on ``ts``).
        The first sweep of a process scans the whole table once.
        """
        wall = time.time() if now is None else now
        db = self._db
        db.execute("BEGIN")
        self._save_rooms()
        for room, last in self._last.items():
            db.execute(
                "DELETE FROM messages WHERE room = ? AND seq <= ?", (room, last - self._per_room)
            )
        if self._max_age > 0:
            cutoff = wall - self._max_age
            if not self._swept_old:
                # Lines from before this process have no marks: one full scan.
                db.execute("DELETE FROM messages WHERE ts < ?", (cutoff,))
                self._swept_old = True
            else:
                bound = None
                while self._marks and self._marks[0][0] < cutoff:
                    bound = self._marks.popleft()[1]
                if bound is not None:
                    # ``ts < ?`` too: a clock that went back, or a reused rowid,
                    # never makes a younger line go early.
                    db.execute("DELETE FROM messages WHERE rowid <= ? AND ts < ?", (bound, cutoff))
            (top,) = db.execute("SELECT max(rowid) FROM messages").fetchone()
            self._marks.append((wall, top or 0))
        db.execute("COMMIT")

    def _checkpoint_loop(self, path: str) -> None:
        # Background work: on Linux a thread has a nice value of its own, and at
        # the lowest priority a checkpoint yields the core to the loop and to
        # ZeroMQ's I/O thread instead of delaying the lines they are moving.
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            seen = 0
            while not self._stop.wait(CHECKPOINT_EVERY):
                if self._commits == seen:
                    continue
                seen = self._commits
                # PASSIVE: never waits for, nor blocks, the loop's writes. Busy
                # or failing, the loop's fallback checkpoint remains.
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            db.close()

    def _save_rooms(self) -> None:
        # Inside every transaction that deletes lines, before it deletes: a
        # room's number then survives its lines (an age sweep may take them
        # all), and a restart finds the rest as MAX(seq) of the stored lines.
        if self._dirty:
            self._db.executemany(
                "INSERT OR REPLACE INTO rooms VALUES (?, ?)",
                [(room, self._last[room]) for room in self._dirty],
            )
            self._dirty.clear()

    def fetch(
        self, room: str, after: int, before: int | None, limit: int
    ) -> tuple[list[ChatMessage], int]:
        self.flush()  # lines of the current batch count too
        last = self._last.get(room, 0)
        upper = last + 1 if before is None else min(before, last + 1)
        if upper <= after + 1 or limit <= 0:
            return [], 0
        rows = self._db.execute(
            "SELECT seq, id, nick, text, ts, action FROM messages"
            " WHERE room = ? AND seq > ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (room, after, upper, limit),
        ).fetchall()
        rows.reverse()
        (oldest,) = self._db.execute(
            "SELECT MIN(seq) FROM messages WHERE room = ?", (room,)
        ).fetchone()
        oldest_kept = upper if oldest is None else oldest
        missed = max(0, min(oldest_kept, upper) - (after + 1))
        lines = [
            ChatMessage(
                room=room, nick=nick, text=text, ts=ts, id=id_, seq=seq, action=bool(action)
            )
            for seq, id_, nick, text, ts, action in rows
        ]
        return lines, missed

    def recent_keys(self, count: int) -> list[tuple[str, ChatMessage]]:
        rows = self._db.execute(
            "SELECT key, room, seq, id, nick, text, ts, action FROM messages"
            " WHERE key IS NOT NULL ORDER BY rowid DESC LIMIT ?",
            (count,),
        ).fetchall()
        rows.reverse()
        return [
            (
                key,
                ChatMessage(
                    room=room, nick=nick, text=text, ts=ts, id=id_, seq=seq, action=bool(action)
                ),
            )
            for key, room, seq, id_, nick, text, ts, action in rows
        ]

    def close(self) -> None:
        try:
            self.flush()
            self._db.execute("BEGIN")
            self._save_rooms()
            self._db.execute("COMMIT")
        finally:
            self._stop.set()
            if self._checkpointer is not None:
                self._checkpointer.join()
            self._db.close()
