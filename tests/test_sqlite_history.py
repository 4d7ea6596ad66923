"""SqliteHistory retention: the age sweep finds old lines by rowid, not by an index."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from broker.sqlite_history import SqliteHistory
from protocol import ChatMessage


def _line(room: str, seq: int, ts: float) -> ChatMessage:
    return ChatMessage(room=room, nick="ann", text=f"line {seq}", ts=ts, id=f"b-{seq}", seq=seq)


def _seqs(store: SqliteHistory, room: str) -> list[int]:
    lines, _ = store.fetch(room, 0, None, 1000)
    return [line.seq for line in lines]


def test_age_sweep_drops_old_lines_and_keeps_young_ones(tmp_path: Path) -> None:
    # Stamps near the real time: a flush sweeps by the real clock too.
    base = time.time()
    store = SqliteHistory(tmp_path / "h.sqlite3", max_age=100.0)
    try:
        for seq in (1, 2):
            store.append(_line("a", seq, base + seq), None)
        store.flush()  # the first flush sweeps (nothing is old yet) and marks
        store.prune(now=base + 10)
        for seq in (3, 4):
            store.append(_line("a", seq, base + 50 + seq), None)
        store.flush()
        store.prune(now=base + 60)
        assert _seqs(store, "a") == [1, 2, 3, 4]
        store.prune(now=base + 120)  # cutoff base + 20: lines 1 and 2 are older
        assert _seqs(store, "a") == [3, 4]
        store.prune(now=base + 170)  # cutoff base + 70: lines 3 and 4 too
        assert _seqs(store, "a") == []
        lines, missed = store.fetch("a", 0, None, 10)
        assert (lines, missed) == ([], 4)
    finally:
        store.close()


def test_a_line_with_a_younger_stamp_is_never_dropped_early(tmp_path: Path) -> None:
    # Stamps near the real time: a flush sweeps by the real clock too.
    base = time.time()
    store = SqliteHistory(tmp_path / "h.sqlite3", max_age=100.0)
    try:
        store.append(_line("a", 1, base), None)
        store.flush()
        store.prune(now=base)
        # Stored before the next mark but stamped late (a clock that jumped).
        store.append(_line("a", 2, base + 4000), None)
        store.flush()
        store.prune(now=base + 1)
        store.prune(now=base + 200)
        assert _seqs(store, "a") == [2]
    finally:
        store.close()


def test_old_database_with_ts_index_is_opened_and_swept(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE messages (room TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL,
            nick TEXT NOT NULL, text TEXT NOT NULL, ts REAL NOT NULL,
            action INTEGER NOT NULL, key TEXT, UNIQUE (room, seq));
        CREATE INDEX messages_ts ON messages (ts);
        CREATE TABLE rooms (room TEXT PRIMARY KEY, last_seq INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO messages VALUES ('a', 1, 'b-1', 'ann', 'old', 10.0, 0, 'k1');
        INSERT INTO messages VALUES ('a', 2, 'b-2', 'ann', 'new', 1000.0, 0, 'k2');
        INSERT INTO rooms VALUES ('a', 2);
        """
    )
    db.commit()
    db.close()
    store = SqliteHistory(path, max_age=100.0)
    try:
        assert store.last_seq("a") == 2
        assert [key for key, _ in store.recent_keys(10)] == ["k1", "k2"]
        store.prune(now=1050.0)  # the first sweep of a process scans everything
        assert _seqs(store, "a") == [2]
        indexes = store._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'messages_ts'"
        ).fetchall()
        assert indexes == []
    finally:
        store.close()


def test_sequence_numbers_survive_a_crash_without_close(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    base = time.time()
    first = SqliteHistory(path, max_age=100.0)
    try:
        for seq in (1, 2, 3):
            first.append(_line("a", seq, base), None)
        first.append(_line("b", 1, base), None)
        first.flush()  # committed, then the process "dies": no close()
        again = SqliteHistory(path, max_age=100.0)
        try:
            assert (again.last_seq("a"), again.last_seq("b")) == (3, 1)
        finally:
            again.close()
        first.prune(now=base + 500)  # every line expires; the numbers must not
        for seq in (4, 5):
            first.append(_line("a", seq, base + 1000), None)
        first.flush()
        again = SqliteHistory(path, max_age=100.0)
        try:
            assert (again.last_seq("a"), again.last_seq("b")) == (5, 1)
            assert _seqs(again, "a") == [4, 5]
        finally:
            again.close()
    finally:
        first.close()
    reopened = SqliteHistory(path)
    try:
        assert (reopened.last_seq("a"), reopened.last_seq("b")) == (5, 1)
    finally:
        reopened.close()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread nice is Linux's")
def test_checkpoints_run_at_the_lowest_priority(tmp_path: Path) -> None:
    history = SqliteHistory(tmp_path / "h.sqlite3")
    try:
        (thread,) = [t for t in threading.enumerate() if t.name == "checkpoint"]
        assert thread.native_id is not None
        stat = Path(f"/proc/self/task/{thread.native_id}/stat")
        deadline = time.monotonic() + 5
        # The thread lowers its own priority as it starts: wait for that.
        while (nice := int(stat.read_text().rsplit(")", 1)[1].split()[16])) != 19:
            assert time.monotonic() < deadline, f"the checkpoint thread runs at nice {nice}"
            time.sleep(0.01)
    finally:
        history.close()
