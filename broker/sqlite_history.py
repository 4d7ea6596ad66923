"""Room history in SQLite, the broker's default store (docs/PROTOCOL.md §8).

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. The
loop appends a batch of lines, commits them in one transaction (:meth:`flush`),
and only then publishes and acknowledges them. A commit has reached the
operating system when ``flush`` returns, so a ``kill -9`` of the broker loses
nothing that anyone has seen or that was acknowledged; an operating-system
crash or power cut can lose the last transactions (WAL without fsync per
commit), in which case clients resend the unacknowledged lines by key.

Speed (docs/PERFORMANCE.md): a commit writes one row per room per batch (the
batch's lines as one JSON array, as they are published), not a row and an
index entry per line; the rooms table is written with each retention sweep,
there is no index on ``ts``, and WAL checkpoints run in a thread of their own
with a connection of their own. Lines are therefore kept and dropped a
batch at a time: retention may keep up to one batch more than its limits.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import operator
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import msgspec

from broker.filelock import HeldLock
from broker.history import Published, StorageError, Unstored, new_epoch
from protocol import Broadcast, ChatMessage, join_frames

__all__ = ["SqliteHistory", "default_history_path", "describe_error"]

log = logging.getLogger("broker")

_SCHEMA = """
-- One row per room per batch the broker committed: its lines (``first`` to
-- ``last``, consecutive sequence numbers of one room) as a JSON array of
-- ``message`` objects, and their idempotency keys as a JSON array (null for a
-- line sent without one; the column is NULL when no line of the batch had one).
CREATE TABLE IF NOT EXISTS batches (
    room  TEXT    NOT NULL,
    first INTEGER NOT NULL,
    last  INTEGER NOT NULL,
    ts    REAL    NOT NULL,  -- the stamp of the batch's youngest line
    lines BLOB    NOT NULL,
    keys  BLOB,
    UNIQUE (room, last)
);
CREATE TABLE IF NOT EXISTS rooms (
    room     TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;
-- ``epoch``: the store's identity (docs/PROTOCOL.md §5.4), made with the file.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

#: Lines per batch row when a database of the first format (a row per line,
#: the ``messages`` table) is converted on opening.
_CONVERT_LINES = 100
#: Seconds of stamps one converted batch may span, so the age limit still
#: drops old lines within a minute of when it would have dropped them alone.
_CONVERT_SPAN = 60.0
_encode = msgspec.json.Encoder().encode
_decode_lines = msgspec.json.Decoder(list[ChatMessage]).decode
_decode_keys = msgspec.json.Decoder(list[str | None]).decode
#: What reading a damaged file can raise: SQLite's errors, and a blob whose
#: bytes were damaged decoding as something other than lines.
_READ_ERRORS = (sqlite3.Error, msgspec.DecodeError, msgspec.ValidationError, ValueError)

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

    def __init__(
        self,
        path: str | Path,
        per_room: int = 10_000,
        max_age: float = 0.0,
        create_dir: bool = False,
    ) -> None:
        """Open (or create) the store and hold it exclusively.

        ``create_dir`` makes missing parent directories (the default location);
        otherwise a missing directory is refused. Raises StorageError, with a
        sentence for the operator, for a file that cannot be used: missing
        directory, held by another broker, read-only, damaged, not SQLite.
        A full disk is not refused when the file is readable and has its
        epoch: the broker starts and refuses lines until space returns.
        """
        self._lock: HeldLock | None = None
        memory = str(path) == ":memory:"
        if not memory:
            path = Path(path)
            if create_dir:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StorageError(f"cannot create {path.parent}: {exc.strerror}") from None
            elif not path.parent.is_dir():
                raise StorageError(
                    f"the directory {path.parent} does not exist (create it, or leave out "
                    "--history for the default location)"
                )
            if path.is_dir():
                raise StorageError(f"{path} is a directory")
            self._lock = HeldLock(path)
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            self._release()
            raise StorageError(_opening_error(exc, path)) from None
        try:
            self._open(memory)
        except StorageError:
            self._db.close()
            self._release()
            raise
        except _READ_ERRORS as exc:
            self._db.close()
            self._release()
            raise StorageError(_opening_error(exc, path)) from None
        self._per_room = per_room
        self._max_age = max_age
        self._pending: Unstored = []
        #: Lines a flush inside ``fetch`` could not store, for the next flush to hand back.
        self._refused: Unstored = []
        #: Why storing fails, while it does (logged once, see _failed).
        self._failing: str | None = None
        self._refused_count = 0
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
        if not memory:
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_FALLBACK_PAGES}")
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, args=(str(path),), name="checkpoint", daemon=True
            )
            self._checkpointer.start()

    def _open(self, memory: bool) -> None:
        """Schema, conversion, epoch, a write probe, and each room's last number."""
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        found = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        if not {"batches", "rooms", "meta"} <= {name for (name,) in found}:
            db.executescript(_SCHEMA)  # a new file, or one from before the epoch
        self._convert_first_format()
        row = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        if row is None:
            # A new (or emptied) file, or one older than epochs: numbering
            # continues with what is stored, under an identity of its own.
            self.epoch = new_epoch()
            db.execute("INSERT INTO meta VALUES ('epoch', ?)", (self.epoch,))
        else:
            self.epoch = str(row[0])
        # A write now, not on the first chat line: a read-only file or
        # directory is refused at start-up. A full disk is not (see __init__).
        try:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('opened', ?)", (f"{time.time():.3f}",))
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                raise
            log.error(
                "history: %s; starting anyway, refusing lines until it has space",
                describe_error(exc),
            )
        # A room's last number is the larger of the rooms table (written only
        # with deletions, see _save_rooms) and its newest line still stored.
        self._last: dict[str, int] = dict(db.execute("SELECT room, last_seq FROM rooms"))
        for room, top in db.execute("SELECT room, MAX(last) FROM batches GROUP BY room"):
            if top > self._last.get(room, 0):
                self._last[room] = top

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def room_epoch(self, room: str) -> str:
        return self.epoch

    def last_seq(self, room: str) -> int:
        return self._last.get(room, 0)

    def append(self, message: ChatMessage, key: str | None) -> None:
        self._pending.append((message, key))
        self._last[message.room] = message.seq
        self._dirty.add(message.room)

    def flush(self, published: Published | None = None) -> Unstored:
        refused, self._refused = self._refused, []
        if not self._pending:
            return refused
        pending, self._pending = self._pending, []
        if refused:
            # Lines numbered after refused ones: storing them would leave a
            # hole in the numbering, so they are refused too.
            self._unwind(refused + pending)
            self._refused_count += len(pending)
            return refused + pending
        # One row per room: a batch of lines is one insert, not one each with
        # an index entry (docs/PERFORMANCE.md). A room's lines of one batch have
        # consecutive numbers, appended in order.
        rooms: dict[str, tuple[list[ChatMessage], list[str | None]]] = {}
        for message, key in pending:
            group = rooms.get(message.room)
            if group is None:
                rooms[message.room] = ([message], [key])
            else:
                group[0].append(message)
                group[1].append(key)
        rows = [
            (
                room,
                lines[0].seq,
                lines[-1].seq,
                max(line.ts for line in lines),
                _encoded(lines, published.get(room) if published else None),
                _encode(keys) if any(key is not None for key in keys) else None,
            )
            for room, (lines, keys) in rooms.items()
        ]
        db = self._db
        try:
            db.execute("BEGIN")
            # Only the lines: the rooms table waits for the next sweep, which
            # saves a page write per commit (docs/PERFORMANCE.md). A plain
            # INSERT: a batch that collides with a stored one is an error,
            # never a line dropped in silence.
            db.executemany("INSERT INTO batches VALUES (?,?,?,?,?,?)", rows)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if not self._rolled_back(rows[0]):
                self._stored()  # the commit went through after all
            else:
                self._unwind(pending)
                self._failed(exc, len(pending))
                return pending
        else:
            self._stored()
        now = time.monotonic()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            try:
                self.prune()
            except sqlite3.Error as exc:
                # The lines are stored: a sweep that fails is tried again later.
                with contextlib.suppress(sqlite3.Error):
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                log.warning("history: retention sweep failed (%s); trying again later", exc)
        return refused

    def _unwind(self, lines: Unstored) -> None:
        """Each room's last number back to before its first line in ``lines``
        (a room's lines are consecutive and follow what is stored)."""
        for line, _ in reversed(lines):
            self._last[line.room] = line.seq - 1

    def _rolled_back(self, first_row: tuple[object, ...]) -> bool:
        """After a failed commit: is the transaction undone? SQLite rolls back
        by itself after some errors (a full disk) and leaves it open after
        others; an error after the commit record was written leaves it done."""
        db = self._db
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
                return True
            # Our own row, lines and all: not another's that collided with it.
            found = db.execute(
                "SELECT 1 FROM batches WHERE room = ? AND last = ? AND lines = ?",
                (first_row[0], first_row[2], first_row[4]),
            ).fetchone()
        except sqlite3.Error:
            return True  # cannot tell: refuse, so the client resends by key
        return found is None

    def _failed(self, exc: Exception, count: int) -> None:
        self._refused_count += count
        reason = describe_error(exc)
        if self._failing != reason:
            self._failing = reason
            log.error(
                "history: cannot store lines: %s; refusing them (error 'unavailable') "
                "until storing works again",
                reason,
            )

    def _stored(self) -> None:
        self._commits += 1
        if self._failing is not None:
            log.warning(
                "history: storing lines again (%d lines were refused meanwhile)",
                self._refused_count,
            )
            self._failing = None
            self._refused_count = 0

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
        saved = self._save_rooms()
        for room, last in self._last.items():
            # Whole batches: one that straddles the limit stays until it is past.
            db.execute(
                "DELETE FROM batches WHERE room = ? AND last <= ?", (room, last - self._per_room)
            )
        if self._max_age > 0:
            cutoff = wall - self._max_age
            if not self._swept_old:
                # Lines from before this process have no marks: one full scan.
                db.execute("DELETE FROM batches WHERE ts < ?", (cutoff,))
                self._swept_old = True
            else:
                bound = None
                while self._marks and self._marks[0][0] < cutoff:
                    bound = self._marks.popleft()[1]
                if bound is not None:
                    # ``ts < ?`` too: a clock that went back, or a reused rowid,
                    # never makes a younger line go early.
                    db.execute("DELETE FROM batches WHERE rowid <= ? AND ts < ?", (bound, cutoff))
            (top,) = db.execute("SELECT max(rowid) FROM batches").fetchone()
            self._marks.append((wall, top or 0))
        db.execute("COMMIT")
        self._dirty -= saved

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

    def _save_rooms(self) -> set[str]:
        # Inside every transaction that deletes lines, before it deletes: a
        # room's number then survives its lines (an age sweep may take them
        # all), and a restart finds the rest as MAX(seq) of the stored lines.
        # The caller forgets the rooms once its transaction is committed.
        saved = set(self._dirty)
        if saved:
            self._db.executemany(
                "INSERT OR REPLACE INTO rooms VALUES (?, ?)",
                [(room, self._last[room]) for room in saved],
            )
        return saved

    def fetch(
        self, room: str, after: int, before: int | None, limit: int, forward: bool = False
    ) -> tuple[list[ChatMessage], int]:
        # Lines of the current batch count too; any this flush cannot store
        # go back to the loop with its own flush, and are not returned here.
        self._refused = self.flush()
        try:
            return self._fetch(room, after, before, limit, forward)
        except _READ_ERRORS as exc:
            raise StorageError(
                f"cannot read the history of {room}: {describe_error(exc)}"
            ) from None

    def _fetch(
        self, room: str, after: int, before: int | None, limit: int, forward: bool
    ) -> tuple[list[ChatMessage], int]:
        last = self._last.get(room, 0)
        upper = last + 1 if before is None else min(before, last + 1)
        if upper <= after + 1 or limit <= 0:
            return [], 0
        if forward:
            lines = self._fetch_forward(room, after, upper, limit)
        else:
            lines = self._fetch_backward(room, after, upper, limit)
        # Batches of a room never overlap, so the oldest is the one that ends first.
        oldest = self._db.execute(
            "SELECT first FROM batches WHERE room = ? ORDER BY last LIMIT 1", (room,)
        ).fetchone()
        oldest_kept = upper if oldest is None else oldest[0]
        missed = max(0, min(oldest_kept, upper) - (after + 1))
        return lines, missed

    def _fetch_forward(self, room: str, after: int, upper: int, limit: int) -> list[ChatMessage]:
        # Oldest batch first, from the one holding after + 1, through the index.
        picked: list[ChatMessage] = []
        rows = self._db.execute(
            "SELECT first, lines FROM batches WHERE room = ? AND last > ? ORDER BY last",
            (room, after),
        )
        for first, blob in rows:
            if first >= upper or len(picked) >= limit:
                break
            picked.extend(line for line in _decode_lines(blob) if after < line.seq < upper)
        return picked[:limit]

    def _fetch_backward(self, room: str, after: int, upper: int, limit: int) -> list[ChatMessage]:
        # Batches of a room never overlap. The ones in the range are those
        # that end inside it, and at most one more that starts inside it and
        # ends past it: both found through the (room, last) index, so an old
        # range costs no more than a recent one.
        straddling = self._db.execute(
            "SELECT first, lines FROM batches WHERE room = ? AND last >= ? ORDER BY last LIMIT 1",
            (room, upper),
        ).fetchone()
        inside = self._db.execute(
            "SELECT lines FROM batches WHERE room = ? AND last > ? AND last < ? ORDER BY last DESC",
            (room, after, upper),
        )
        blobs = itertools.chain(
            [straddling[1]] if straddling is not None and straddling[0] < upper else [],
            (blob for (blob,) in inside),
        )
        newest_first: list[ChatMessage] = []
        # Newest batch first, read lazily: a request for the last 50 lines
        # decodes a batch or two, however long the room's history.
        for blob in blobs:
            for line in reversed(_decode_lines(blob)):
                if after < line.seq < upper:
                    newest_first.append(line)
            if len(newest_first) >= limit:
                break
        lines = newest_first[:limit]
        lines.reverse()
        return lines

    def recent_keys(self, count: int) -> list[tuple[str, ChatMessage]]:
        try:
            return self._recent_keys(count)
        except _READ_ERRORS as exc:
            raise StorageError(describe_error(exc)) from None

    def _recent_keys(self, count: int) -> list[tuple[str, ChatMessage]]:
        newest_first: list[tuple[str, ChatMessage]] = []
        for lines_blob, keys_blob in self._db.execute(
            "SELECT lines, keys FROM batches WHERE keys IS NOT NULL ORDER BY rowid DESC"
        ):
            lines = _decode_lines(lines_blob)
            keys = _decode_keys(keys_blob)
            for key, line in zip(reversed(keys), reversed(lines), strict=True):
                if key is not None:
                    newest_first.append((key, line))
            if len(newest_first) >= count:
                break
        keyed = newest_first[:count]
        keyed.reverse()
        return keyed

    def _convert_first_format(self) -> None:
        """Rewrite a database of the first format (a ``messages`` row per line)
        as batches, once, in one transaction; insertion order is kept, so
        ``recent_keys`` still finds the newest keys first."""
        db = self._db
        found = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'"
        ).fetchone()
        if found is None:
            return
        db.execute("BEGIN")
        try:
            rows = db.execute(
                "SELECT room, seq, id, nick, text, ts, action, key FROM messages ORDER BY rowid"
            )
            group: list[tuple[ChatMessage, str | None]] = []
            count = 0
            for room, seq, id_, nick, text, ts, action, key in rows:
                if group and (
                    group[0][0].room != room
                    or len(group) >= _CONVERT_LINES
                    or abs(ts - group[0][0].ts) > _CONVERT_SPAN
                ):
                    self._insert_group(group)
                    group = []
                line = ChatMessage(
                    room=room, nick=nick, text=text, ts=ts, id=id_, seq=seq, action=bool(action)
                )
                group.append((line, key))
                count += 1
            if group:
                self._insert_group(group)
            db.execute("DROP TABLE messages")  # and its indexes
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            raise
        log.info("history: converted %d stored lines to the batch format", count)

    def _insert_group(self, group: list[tuple[ChatMessage, str | None]]) -> None:
        lines = [line for line, _ in group]
        keys = [key for _, key in group]
        self._db.execute(
            "INSERT INTO batches VALUES (?,?,?,?,?,?)",
            (
                lines[0].room,
                lines[0].seq,
                lines[-1].seq,
                max(line.ts for line in lines),
                _encode(lines),
                _encode(keys) if any(key is not None for key in keys) else None,
            ),
        )

    def close(self) -> None:
        try:
            refused = self.flush()
            if refused:
                log.error("history: %d lines could not be stored at shutdown", len(refused))
            db = self._db
            try:
                db.execute("BEGIN")
                saved = self._save_rooms()
                db.execute("COMMIT")
                self._dirty -= saved
            except sqlite3.Error as exc:
                # Each room's number is still the newest stored line's.
                with contextlib.suppress(sqlite3.Error):
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                log.warning("history: could not save room numbers at shutdown: %s", exc)
        finally:
            self._stop.set()
            if self._checkpointer is not None:
                self._checkpointer.join()
            self._db.close()
            self._release()


def _encoded(
    lines: list[ChatMessage], published: tuple[Sequence[Broadcast], Sequence[bytes]] | None
) -> bytes:
    """The room's lines as one JSON array: the bytes the loop encoded to
    publish them when it publishes exactly these lines and nothing else to
    the room this turn (docs/PERFORMANCE.md), otherwise encoded here. The
    messages are compared by identity, so a line flushed earlier in the turn
    (a history request in between) or a notice among them means encoding."""
    if published is not None:
        messages, frames = published
        if len(messages) == len(lines) and all(map(operator.is_, messages, lines)):
            return join_frames(frames)
    return _encode(lines)


def describe_error(exc: BaseException) -> str:
    """What a storage error means, in words for an operator."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        primary = code & 0xFF  # extended codes keep the primary one in the low byte
        meaning = _MEANINGS.get(primary)
        if meaning is not None:
            return f"{meaning} ({exc})"
        return str(exc)
    if isinstance(exc, msgspec.DecodeError | msgspec.ValidationError | ValueError):
        return f"damaged file: stored lines do not decode ({exc})"
    return str(exc)


def _opening_error(exc: BaseException, path: str | Path) -> str:
    # On a full disk SQLite cannot make its -shm file and says "disk I/O
    # error"; the operator needs to hear "full".
    if str(path) != ":memory:" and isinstance(exc, sqlite3.Error):
        with contextlib.suppress(OSError):
            stat = os.statvfs(Path(path).parent)
            if stat.f_bavail * stat.f_frsize < _NEARLY_FULL:
                return f"disk full: no space left in {Path(path).parent} ({exc})"
    return describe_error(exc)


#: Free bytes below which a failure to open is put down to a full disk.
_NEARLY_FULL = 64 * 1024

_MEANINGS = {
    sqlite3.SQLITE_FULL: "disk full",
    sqlite3.SQLITE_READONLY: "read-only: the file or its directory cannot be written",
    sqlite3.SQLITE_CORRUPT: "damaged file",
    sqlite3.SQLITE_NOTADB: "not a history file (not SQLite)",
    sqlite3.SQLITE_IOERR: "I/O error",
    sqlite3.SQLITE_CANTOPEN: "cannot open the file (or its -wal/-shm files)",
    sqlite3.SQLITE_PERM: "permission denied",
    sqlite3.SQLITE_BUSY: "locked by another process",
    sqlite3.SQLITE_CONSTRAINT: "a batch collides with a stored one",
}
