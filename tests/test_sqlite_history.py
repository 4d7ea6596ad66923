"""SqliteHistory retention: the age sweep finds old lines by rowid, not by an index."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path

import msgspec
import pytest

from broker.history import StorageError
from broker.sqlite_history import SqliteHistory
from protocol import ChatMessage, LeaveNotice, encode


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


def _first_format_database(path: Path, rows: list[tuple[object, ...]], extra: str = "") -> None:
    """A history database as the first format wrote it (a ``messages`` row per
    line), holding ``rows``; ``extra`` is more SQL (an index it once had)."""
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE messages (room TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL,
            nick TEXT NOT NULL, text TEXT NOT NULL, ts REAL NOT NULL,
            action INTEGER NOT NULL, key TEXT, UNIQUE (room, seq));
        CREATE TABLE rooms (room TEXT PRIMARY KEY, last_seq INTEGER NOT NULL) WITHOUT ROWID;
        """
        + extra
    )
    db.executemany("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()


def test_old_database_with_ts_index_is_opened_and_swept(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    rows = [
        ("a", 1, "b-1", "ann", "old", 10.0, 0, "k1"),
        ("a", 2, "b-2", "ann", "new", 1000.0, 0, "k2"),
    ]
    extra = "CREATE INDEX messages_ts ON messages (ts); INSERT INTO rooms VALUES ('a', 2);"
    _first_format_database(path, rows, extra)
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
        # ...and the kernel drops its lock on the history file (broker/filelock.py).
        first._release()
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


def _store_batches(store: SqliteHistory, sizes: list[int], base: float) -> None:
    """Room ``a`` gets batches of ``sizes`` lines (every third keyed); room
    ``b`` one line with each batch, so rows of two rooms interleave."""
    seq = 0
    for n, size in enumerate(sizes):
        for _ in range(size):
            seq += 1
            store.append(_line("a", seq, base + seq), f"a{seq}" if seq % 3 == 0 else None)
        store.append(_line("b", n + 1, base + seq), f"b{n + 1}")
        store.flush()


def test_ranges_cut_across_batches(tmp_path: Path) -> None:
    store = SqliteHistory(tmp_path / "h.sqlite3")
    try:
        _store_batches(store, [10, 10, 5], time.time())
        assert _seqs(store, "a") == list(range(1, 26))
        assert _seqs(store, "b") == [1, 2, 3]
        lines, missed = store.fetch("a", 0, None, 7)  # the newest 7, in order
        assert ([line.seq for line in lines], missed) == (list(range(19, 26)), 0)
        lines, _ = store.fetch("a", 3, 15, 100)  # inside two batches
        assert [line.seq for line in lines] == list(range(4, 15))
        assert store.fetch("a", 12, 13, 100) == ([], 0)
        assert [line.text for line in store.fetch("a", 9, 11, 5)[0]] == ["line 10"]
    finally:
        store.close()


def test_line_retention_drops_whole_batches_once_past_the_limit(tmp_path: Path) -> None:
    store = SqliteHistory(tmp_path / "h.sqlite3", per_room=10)
    try:
        _store_batches(store, [10, 10, 5], time.time())
        store.prune()
        # Lines 11-20 form one batch that straddles the limit (16-25): it stays.
        lines, missed = store.fetch("a", 0, None, 100)
        assert ([line.seq for line in lines], missed) == (list(range(11, 26)), 10)
        for seq in range(26, 32):
            store.append(_line("a", seq, time.time()), None)
        store.flush()
        store.prune()  # now the limit is 22-31: the batch of 11-20 goes
        assert _seqs(store, "a") == list(range(21, 32))
    finally:
        store.close()


def test_recent_keys_are_the_newest_across_batches_and_rooms(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = SqliteHistory(path)
    try:
        _store_batches(store, [10, 10, 5], time.time())
    finally:
        store.close()
    again = SqliteHistory(path)
    try:
        keyed = [(key, line.room, line.seq) for key, line in again.recent_keys(100)]
        expected = (
            [(f"a{s}", "a", s) for s in (3, 6, 9)]
            + [("b1", "b", 1)]
            + [(f"a{s}", "a", s) for s in (12, 15, 18)]
            + [("b2", "b", 2)]
            + [(f"a{s}", "a", s) for s in (21, 24)]
            + [("b3", "b", 3)]
        )
        assert keyed == expected
        assert [key for key, _ in again.recent_keys(3)] == ["a21", "a24", "b3"]
    finally:
        again.close()


def test_a_database_of_the_first_format_is_converted_once(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    rows = []
    for seq in range(1, 251):  # room a, interleaved with room b, one action line
        rows.append(("a", seq, f"b-a{seq}", "ann", f"a {seq}", 100.0 + seq, 0, f"ka{seq}"))
        if seq % 100 == 0:
            rows.append(("b", seq // 100, f"b-b{seq}", "bob", "me too", 100.0 + seq, 1, None))
    _first_format_database(path, rows)
    store = SqliteHistory(path)
    try:
        assert (store.last_seq("a"), store.last_seq("b")) == (250, 2)
        lines, missed = store.fetch("a", 0, None, 1000)
        assert ([line.seq for line in lines], missed) == (list(range(1, 251)), 0)
        assert lines[41] == ChatMessage(
            room="a", nick="ann", text="a 42", ts=142.0, id="b-a42", seq=42
        )
        (b_line,) = store.fetch("b", 1, 3, 10)[0]
        assert (b_line.seq, b_line.action, b_line.nick) == (2, True, "bob")
        keys = [key for key, _ in store.recent_keys(1000)]
        assert keys == [f"ka{seq}" for seq in range(1, 251)]
        tables = {name for (name,) in store._db.execute("SELECT name FROM sqlite_master")}
        assert "messages" not in tables
        # Stamps more than a minute apart (here 61 lines) never share a batch.
        widths = store._db.execute("SELECT MAX(last - first) FROM batches").fetchone()
        assert widths == (60,)
    finally:
        store.close()


def test_an_old_range_of_a_long_history(tmp_path: Path) -> None:
    store = SqliteHistory(tmp_path / "h.sqlite3")
    try:
        base = time.time()
        for start in range(1, 1001, 10):  # a hundred batches of ten lines
            for seq in range(start, start + 10):
                store.append(_line("a", seq, base), None)
            store.flush()
        # Both ends of the range fall inside batches (91-100 and 101-110).
        lines, missed = store.fetch("a", 95, 107, 100)
        assert ([line.seq for line in lines], missed) == (list(range(96, 107)), 0)
        assert [line.seq for line in store.fetch("a", 95, 107, 3)[0]] == [104, 105, 106]
        assert [line.seq for line in store.fetch("a", 101, 102, 5)[0]] == []
        assert [line.seq for line in store.fetch("a", 0, 2, 5)[0]] == [1]
        assert [line.seq for line in store.fetch("a", 998, None, 5)[0]] == [999, 1000]
    finally:
        store.close()


# --- identity, paging and failures (issue 13) ------------------------------------------


def test_a_store_keeps_its_epoch_and_an_emptied_file_gets_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = SqliteHistory(path)
    epoch = store.epoch
    assert len(epoch) == 16 and int(epoch, 16) >= 0
    store.append(_line("a", 1, time.time()), None)
    store.flush()
    store.close()
    again = SqliteHistory(path)
    assert (again.epoch, again.room_epoch("a"), again.last_seq("a")) == (epoch, epoch, 1)
    again.close()
    path.write_bytes(b"")  # emptied
    emptied = SqliteHistory(path)
    assert emptied.epoch != epoch and emptied.last_seq("a") == 0
    emptied.close()


def test_a_file_from_before_epochs_gets_one_and_numbering_continues(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = SqliteHistory(path)
    for seq in (1, 2, 3):
        store.append(_line("a", seq, time.time()), None)
    store.flush()
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("DROP TABLE meta")
    old = SqliteHistory(path)
    epoch = old.epoch
    assert old.last_seq("a") == 3 and epoch
    old.close()
    again = SqliteHistory(path)
    assert again.epoch == epoch  # assigned once
    again.close()


def test_forward_returns_the_oldest_lines_of_the_range(tmp_path: Path) -> None:
    store = SqliteHistory(tmp_path / "h.sqlite3")
    try:
        for batch in ((1, 2, 3), (4,), (5, 6), (7, 8, 9, 10)):
            for seq in batch:
                store.append(_line("a", seq, time.time()), None)
            store.flush()
        for after, before, limit in [(0, None, 3), (2, None, 4), (3, 9, 2), (0, None, 100)]:
            lines, _ = store.fetch("a", after, before, limit, forward=True)
            top = 11 if before is None else before
            assert [m.seq for m in lines] == list(range(after + 1, top))[:limit]
            lines, _ = store.fetch("a", after, before, limit)
            assert [m.seq for m in lines] == list(range(after + 1, top))[-limit:]
    finally:
        store.close()


class _FailingAt:
    """A connection that fails one statement: before it runs, or just after."""

    def __init__(self, db: sqlite3.Connection, statement: str, after: bool = False) -> None:
        self.db, self.statement, self.after = db, statement, after

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql.startswith(self.statement):
            if self.after:
                self.db.execute(sql, *args)
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, rows: object) -> sqlite3.Cursor:
        return self.db.executemany(sql, rows)  # type: ignore[arg-type]


def test_a_failed_commit_hands_its_lines_back_and_rewinds_the_numbering(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteHistory(tmp_path / "h.sqlite3")
    real = store._db
    try:
        store.append(_line("a", 1, time.time()), "k1")
        assert store.flush() == []
        store._db = _FailingAt(real, "COMMIT")  # type: ignore[assignment]
        for seq in (2, 3):
            store.append(_line("a", seq, time.time()), f"k{seq}")
        refused = store.flush()
        assert [(m.seq, key) for m, key in refused] == [(2, "k2"), (3, "k3")]
        assert store.last_seq("a") == 1
        store.append(_line("a", 2, time.time()), "k2")
        assert len(store.flush()) == 1
        assert sum("cannot store lines" in r.message for r in caplog.records) == 1  # once
        store._db = real
        store.append(_line("a", 2, time.time()), "k2")
        assert store.flush() == []
        assert _seqs(store, "a") == [1, 2]
        assert any("storing lines again" in r.message for r in caplog.records)
    finally:
        store._db = real
        store.close()


def test_a_commit_that_went_through_despite_an_error_is_not_refused(tmp_path: Path) -> None:
    store = SqliteHistory(tmp_path / "h.sqlite3")
    real = store._db
    try:
        store._db = _FailingAt(real, "COMMIT", after=True)  # type: ignore[assignment]
        store.append(_line("a", 1, time.time()), "k1")
        assert store.flush() == []  # stored: never reported undelivered
        store._db = real
        assert _seqs(store, "a") == [1]
    finally:
        store._db = real
        store.close()


def test_a_failed_sweep_after_a_commit_keeps_the_lines(tmp_path: Path) -> None:
    store = SqliteHistory(tmp_path / "h.sqlite3", per_room=1)
    real = store._db
    try:
        store._db = _FailingAt(real, "DELETE")  # type: ignore[assignment]
        store.append(_line("a", 1, time.time()), "k1")
        assert store.flush() == []  # the sweep of this flush fails; the line stays stored
        store._db = real
        assert _seqs(store, "a") == [1]
    finally:
        store._db = real
        store.close()


def test_a_line_after_one_refused_in_the_same_turn_is_refused_too(tmp_path: Path) -> None:
    store = SqliteHistory(tmp_path / "h.sqlite3")
    real = store._db
    try:
        store._db = _FailingAt(real, "COMMIT")  # type: ignore[assignment]
        store.append(_line("a", 1, time.time()), None)
        store.fetch("a", 0, None, 10)  # flushes, and fails: kept for the loop's flush
        store._db = real
        store.append(_line("a", 2, time.time()), None)  # numbered after the refused one
        assert [m.seq for m, _ in store.flush()] == [1, 2]  # no hole in the numbering
        assert store.last_seq("a") == 0 and _seqs(store, "a") == []
    finally:
        store._db = real
        store.close()


def test_a_damaged_line_is_a_storage_error(tmp_path: Path) -> None:
    store = SqliteHistory(tmp_path / "h.sqlite3")
    try:
        store.append(_line("a", 1, time.time()), None)
        store.flush()
        store._db.execute("UPDATE batches SET lines = x'ff00'")
        with pytest.raises(StorageError, match="cannot read the history of a"):
            store.fetch("a", 0, None, 10)
    finally:
        store.close()


def test_one_store_per_file_and_the_lock_names_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    first = SqliteHistory(path)
    try:
        with pytest.raises(StorageError, match=rf"in use by another broker \(pid {os.getpid()}\)"):
            SqliteHistory(path)
    finally:
        first.close()
    SqliteHistory(path).close()  # free again once closed
    memory = SqliteHistory(":memory:")  # memory stores need no lock
    assert memory.epoch and memory.epoch != SqliteHistory(":memory:").epoch


def _stored_blobs(path: Path) -> list[bytes]:
    db = sqlite3.connect(path)
    try:
        return [bytes(blob) for (blob,) in db.execute("SELECT lines FROM batches ORDER BY rowid")]
    finally:
        db.close()


def test_a_flush_keeps_the_published_bytes_only_for_exactly_its_lines(tmp_path: Path) -> None:
    # The loop hands the frames it will publish to the flush, so the store
    # need not encode the same lines again (docs/PERFORMANCE.md). Frames
    # that are not the lines' encoding show which bytes were kept.
    path = tmp_path / "h.sqlite3"
    store = SqliteHistory(path)
    one, two, three = (_line("a", seq, 1.0 + seq) for seq in (1, 2, 3))
    notice = LeaveNotice(room="a", nick="bob", reason="part", ts=3.5)
    try:
        for line in (one, two):
            store.append(line, None)
        assert store.flush({"a": ([one, two], [b"[1]", b"[2,3]"])}) == []
        # A notice among the room's broadcasts: the lines are encoded here.
        store.append(three, None)
        assert store.flush({"a": ([three, notice], [b"[4]"])}) == []
        # Equal messages that are not these very lines: encoded here too.
        four = _line("a", 4, 5.0)
        store.append(four, None)
        assert store.flush({"a": ([_line("a", 4, 5.0)], [b"{5}"])}) == []
        # A lone line published as itself is stored as an array of one.
        five = _line("a", 5, 6.0)
        store.append(five, None)
        assert store.flush({"a": ([five], [encode(five)])}) == []
    finally:
        store.close()
    assert _stored_blobs(path) == [
        b"[1,2,3]",
        msgspec.json.encode([three]),
        msgspec.json.encode([four]),
        msgspec.json.encode([five]),
    ]


def test_a_history_request_within_a_turn_does_not_take_the_turns_frames(tmp_path: Path) -> None:
    # A fetch flushes the lines appended so far; the loop's flush then holds
    # only the later ones, while the frames carry the whole turn.
    path = tmp_path / "h.sqlite3"
    store = SqliteHistory(path)
    one, two = _line("a", 1, 1.0), _line("a", 2, 2.0)
    try:
        store.append(one, None)
        assert [line.seq for line in store.fetch("a", 0, None, 10)[0]] == [1]
        store.append(two, None)
        assert store.flush({"a": ([one, two], [b"[1,2]"])}) == []
        assert _seqs(store, "a") == [1, 2]
    finally:
        store.close()
    assert _stored_blobs(path) == [msgspec.json.encode([one]), msgspec.json.encode([two])]
