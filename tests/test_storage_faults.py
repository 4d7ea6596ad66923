"""The broker under storage faults, with real ``chat-broker`` processes
(issue 13, items 1 to 6; docs/PROTOCOL.md §7, §8): a full disk (a small tmpfs
mounted here), read-only storage (a read-only mount: root ignores permission
bits), damaged pages, two brokers on one file, a history file emptied, and a
directory that does not exist. Mounting needs root, as CI runs."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from broker.sqlite_history import SqliteHistory
from client import Client
from client import events as ev
from protocol import ChatMessage
from tests.conformance.rawchat import RawClient
from tests.conftest import SCALE, BrokerProcess, script, spawn_broker, wait_for

pytestmark = pytest.mark.timeout(120)

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)"
)


def _mount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted at the end whatever happens."""
    where = tmp_path / "fs"
    where.mkdir()
    _mount(where, "size=1m")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def _refused_at_start(*args: str) -> tuple[int, list[str]]:
    """Run ``chat-broker`` that must refuse to start: its status and stderr lines."""
    proc = subprocess.run(
        [
            script("chat-broker"),
            "--router",
            "tcp://127.0.0.1:*",
            "--pub",
            "tcp://127.0.0.1:*",
            *args,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=20 * SCALE,
        check=False,
    )
    return proc.returncode, proc.stderr.decode().splitlines()


def _line(room: str, seq: int, text: str) -> ChatMessage:
    return ChatMessage(room=room, nick="n", text=text, ts=time.time(), id=f"x-{seq}", seq=seq)


def _fill(path: Path, room: str, count: int, text: str, keyed: bool, start: int = 1) -> None:
    store = SqliteHistory(path)
    try:
        for seq in range(start, start + count):
            store.append(_line(room, seq, text), f"{room}-{seq}" if keyed else None)
            assert not store.flush()
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:  # all into the main file
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _stored(path: Path) -> dict[str, list[int]]:
    """room -> every stored seq, in order, straight from the file."""
    found: dict[str, list[int]] = {}
    with contextlib.closing(sqlite3.connect(path)) as db:
        for room, blob in db.execute("SELECT room, lines FROM batches ORDER BY room, last"):
            found.setdefault(room, []).extend(m["seq"] for m in json.loads(blob))
    return found


def _stored_keys(path: Path) -> set[str]:
    keys: set[str] = set()
    with contextlib.closing(sqlite3.connect(path)) as db:
        for (blob,) in db.execute("SELECT keys FROM batches WHERE keys IS NOT NULL"):
            keys |= {k for k in json.loads(blob) if k is not None}
    return keys


# --- refused at start-up, in one line -------------------------------------------------


@needs_root
def test_a_read_only_history_is_refused_at_start(tmpfs: Path) -> None:
    path = tmpfs / "h.sqlite3"
    _fill(path, "lobby", 3, "hi", keyed=False)
    # A broker killed while running leaves its -wal and -shm files: with them
    # SQLite opens a read-only file without a word, and only the first write
    # fails. The check at start-up must not depend on them.
    writer = (
        "import os, sys, time\n"
        "from broker.sqlite_history import SqliteHistory\n"
        "from protocol import ChatMessage\n"
        "store = SqliteHistory(sys.argv[1])\n"
        "store.append(ChatMessage(room='lobby', nick='n', text='t', ts=time.time(),\n"
        "             id='x-4', seq=4), None)\n"
        "store.flush()\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", writer, str(path)], check=True, timeout=30)
    assert Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    status, lines = _refused_at_start("--history", str(path))
    assert status == 1
    assert len(lines) == 1 and "read-only" in lines[0] and str(path) in lines[0], lines


@needs_root
def test_an_unwritable_directory_is_refused_at_start(tmp_path: Path) -> None:
    # The file may be written, its directory not (no -wal, no lock file). Root
    # ignores permission bits, so: the directory bind-mounted read-only, and
    # the file bind-mounted read-write over its place in it.
    source = tmp_path / "source.sqlite3"
    _fill(source, "lobby", 2, "hi", keyed=False)
    for name in os.listdir(tmp_path):
        if name != "source.sqlite3":
            (tmp_path / name).unlink()
    where = tmp_path / "fixed"
    where.mkdir()
    path = where / "h.sqlite3"
    path.touch()
    mounted: list[Path] = []
    try:
        for command in (
            ["mount", "--bind", str(where), str(where)],
            ["mount", "-o", "remount,ro,bind", str(where)],
            ["mount", "--bind", str(source), str(path)],
        ):
            subprocess.run(command, check=True)
            if command[1] == "--bind":
                mounted.append(Path(command[-1]))
        with open(path, "r+b"):
            pass  # the file itself is writable...
        with pytest.raises(OSError):
            (where / "probe").touch()  # ...its directory is not
        status, lines = _refused_at_start("--history", str(path))
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", str(target)], check=False)
    assert status == 1
    assert len(lines) == 1 and "read-only" in lines[0] and str(path) in lines[0], lines


def test_an_explicit_history_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "h.sqlite3"
    status, lines = _refused_at_start("--history", str(path))
    assert status == 1
    assert len(lines) == 1 and "does not exist" in lines[0], lines
    assert not (tmp_path / "no").exists()  # nothing created behind the user's back


def test_the_default_history_location_is_still_created(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [script("chat-broker"), "--router", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        target = tmp_path / "data" / "zmq-chat" / "history.sqlite3"
        deadline = time.monotonic() + 10 * SCALE
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert target.exists()
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_second_broker_on_the_same_history_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    first = spawn_broker("--history", str(path))
    try:
        status, lines = _refused_at_start("--history", str(path))
        assert status == 1
        assert len(lines) == 1, lines
        assert "in use by another broker" in lines[0] and f"pid {first.proc.pid}" in lines[0]
        assert first.proc.poll() is None  # the first one is untouched
    finally:
        first.stop()
    # Once the first is gone (even by kill -9), the file is free again.
    again = spawn_broker("--history", str(path))
    again.stop(9)
    last = spawn_broker("--history", str(path))
    last.stop()


def test_the_store_never_drops_a_colliding_batch_in_silence(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    _fill(path, "lobby", 3, "hi", keyed=True)
    store = SqliteHistory(path)
    try:
        store._last["lobby"] = 2  # as a second, unlocked writer would have it
        store.append(_line("lobby", 3, "collides"), "other-3")
        refused = store.flush()
        assert [line.text for line, _ in refused] == ["collides"]  # refused, not "stored"
    finally:
        store.close()
    assert _stored(path) == {"lobby": [1, 2, 3]}


def _damage(path: Path, marker: bytes) -> None:
    """Overwrite the first page of the file that holds ``marker`` with garbage."""
    data = bytearray(path.read_bytes())
    with contextlib.closing(sqlite3.connect(path)) as db:
        page = db.execute("PRAGMA page_size").fetchone()[0]
    at = data.index(marker) // page * page
    data[at : at + page] = bytes([0xA5]) * page
    path.write_bytes(bytes(data))


def test_damage_in_pages_read_at_start_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    # Keyed lines: their batches are read at start, to reload the keys (§5.5).
    _fill(path, "lobby", 40, "OLD" * 1500, keyed=True)
    _damage(path, b"OLDOLDOLD")
    status, lines = _refused_at_start("--history", str(path))
    assert status == 1
    assert len(lines) == 1 and "damaged" in lines[0] and "Traceback" not in lines[0], lines


# --- damaged, full: the broker keeps serving ------------------------------------------------


def test_a_damaged_page_read_by_history_is_an_error_reply_not_a_crash(
    tmp_path: Path, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    path = tmp_path / "h.sqlite3"
    # Old lines without keys are never read at start; new ones are.
    _fill(path, "lobby", 40, "OLD" * 1500, keyed=False)
    _fill(path, "lobby", 5, "new", keyed=True, start=41)
    _damage(path, b"OLDOLDOLD")
    running = spawn_broker("--history", str(path))
    raw = RawClient(ctx, running.router, None)
    try:
        raw.join("ann")
        raw.send({"type": "history", "room": "lobby", "after": 0, "before": 30, "limit": 1000})
        error = raw.error()
        assert (error["code"], error["req"], error["room"]) == ("unavailable", "history", "lobby")
        running.wait_for_log("cannot read the history of lobby")
        # The rest of the history, and everything else, still works.
        raw.send({"type": "history", "room": "lobby", "after": 40})
        reply = raw.reply_of("history")
        assert [m["seq"] for m in reply["messages"]] == [41, 42, 43, 44, 45]
        raw.send({"type": "say", "room": "lobby", "text": "still here", "key": "k-after"})
        assert raw.reply_of("ack")["seq"] == 46
        assert running.proc.poll() is None
    finally:
        raw.close()
        assert running.stop() == 0


def _say_until_refused(raw: RawClient, prefix: str, text: str) -> tuple[list[str], list[str]]:
    """Keyed lines, one at a time, until one is refused: (acked keys, refused keys)."""
    acked: list[str] = []
    for n in range(2000):
        key = f"{prefix}-{n}"
        raw.send({"type": "say", "room": "lobby", "text": text, "key": key})
        answer = raw.reply(lambda m, key=key: m.get("key") == key)  # type: ignore[misc]
        if answer["type"] == "ack":
            acked.append(key)
            continue
        assert (answer["type"], answer["code"], answer["req"]) == ("error", "unavailable", "say")
        return acked, [key]
    raise AssertionError("the disk never filled up")


@needs_root
def test_a_full_disk_refuses_lines_keeps_serving_and_recovers(
    tmpfs: Path, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    path = tmpfs / "h.sqlite3"
    filler = tmpfs / "filler"
    filler.write_bytes(b"\0" * 200_000)  # space to give back later
    text = "x" * 4000
    running = spawn_broker("--history", str(path), "--max-rate", "0")
    ann = RawClient(ctx, running.router, None)
    bob = RawClient(ctx, running.router, None)
    restarted: BrokerProcess | None = None
    try:
        ann.join("ann")
        bob.join("bob")
        acked, refused = _say_until_refused(ann, "a", text)
        # A burst while full: every line answered, each refused with its key.
        for n in range(5):
            ann.send({"type": "say", "room": "lobby", "text": text, "key": f"burst-{n}"})
        for n in range(5):
            error = ann.reply(lambda m, n=n: m.get("key") == f"burst-{n}")  # type: ignore[misc]
            assert error["code"] == "unavailable"
            refused.append(f"burst-{n}")
        # Everything that does not store still works.
        ann.send({"type": "msg", "to": "bob", "text": "psst"})
        assert bob.reply_of("private")["text"] == "psst"
        ann.send({"type": "who", "room": "lobby"})
        assert ann.reply_of("who")["members"] == ["ann", "bob"]
        ann.send({"type": "ping"})
        assert ann.reply_of("pong")["seqs"] == {"lobby": len(acked)}
        ann.join_room("dev")
        # Logged once, clearly, not once per line.
        running.wait_for_log("cannot store lines: disk full")
        assert sum("cannot store lines" in line for line in running.log) == 1
        assert all("Traceback" not in line for line in running.log)
        # A restart on the full disk: the files SQLite needs are there (the
        # close could not checkpoint), so it starts, serves, and refuses lines
        # once what space its WAL has is used up.
        ann.close()
        bob.close()
        assert running.stop() == 0
        with contextlib.suppress(OSError), open(tmpfs / "rest", "wb", buffering=0) as rest:
            while True:
                rest.write(b"\0" * 4096)
        restarted = running = spawn_broker("--history", str(path), "--max-rate", "0")
        ann = RawClient(ctx, running.router, None)
        ann.join("ann")
        more, refused_again = _say_until_refused(ann, "r", text)
        acked += more
        refused += refused_again
        assert all("Traceback" not in line for line in running.log)
        # Space comes back: the same keys are stored now, numbered on from the acked ones.
        filler.unlink()
        (tmpfs / "rest").unlink()
        seqs = []
        for key in refused:
            ann.send({"type": "say", "room": "lobby", "text": "short", "key": key})
            ack = ann.reply(lambda m, key=key: m.get("key") == key)  # type: ignore[misc]
            assert ack["type"] == "ack", ack
            seqs.append(ack["seq"])
        assert seqs == list(range(len(acked) + 1, len(acked) + 1 + len(refused)))
        running.wait_for_log("storing lines again")
        ann.close()
        assert running.stop() == 0
    finally:
        ann.close()
        bob.close()
        running.stop()
        if restarted is not None:
            restarted.stop()
    # Acknowledged = stored, exactly; numbering without holes or repeats.
    assert _stored_keys(path) == set(acked) | set(refused)
    assert _stored(path)["lobby"] == list(range(1, len(acked) + len(refused) + 1))


@needs_root
def test_a_start_on_a_full_disk_without_room_to_open_is_refused_in_one_line(
    tmpfs: Path,
) -> None:
    path = tmpfs / "h.sqlite3"
    _fill(path, "lobby", 3, "hi", keyed=False)
    for side in ("-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)
    with contextlib.suppress(OSError), open(tmpfs / "rest", "wb", buffering=0) as rest:
        while True:
            rest.write(b"\0" * 4096)
    status, lines = _refused_at_start("--history", str(path))
    assert status == 1
    assert len(lines) == 1 and "disk full" in lines[0], lines


# --- identity of the store -----------------------------------------------------------------


def test_an_emptied_history_file_gets_a_new_epoch(
    tmp_path: Path, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    path = tmp_path / "h.sqlite3"
    _fill(path, "lobby", 7, "hi", keyed=False)

    def epochs() -> tuple[str, str, int]:
        running = spawn_broker("--history", str(path))
        raw = RawClient(ctx, running.router, None)
        try:
            welcome = raw.join("ann")
            raw.send({"type": "history", "room": "lobby"})
            reply = raw.reply_of("history")
            raw.send({"type": "ping"})
            pong = raw.reply_of("pong")
            assert reply["epoch"] == pong["epochs"]["lobby"] == welcome["epoch"]
            return welcome["epoch"], reply["epoch"], reply.get("seq", 0)
        finally:
            raw.close()
            running.stop()

    before = epochs()
    assert epochs() == before  # a restart keeps it
    assert before[2] == 7
    with open(path, "r+b") as f:
        f.truncate(0)
    for side in ("-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)
    after = epochs()
    assert after[2] == 0
    assert after[0] != before[0] and len(after[0]) == 16


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p.write_text("hello, not a database\n" * 200), "not a history file"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
    ids=["text-file", "directory"],
)
def test_a_history_that_is_no_history_file_is_refused_in_one_line(
    tmp_path: Path, make: Callable[[Path], object], words: str
) -> None:
    path = tmp_path / "h.sqlite3"
    make(path)
    status, lines = _refused_at_start("--history", str(path))
    assert status == 1
    assert len(lines) == 1 and words in lines[0] and str(path) in lines[0], lines


@needs_root
def test_through_a_full_disk_the_client_library_delivers_every_line_once(tmpfs: Path) -> None:
    # End to end: lines refused as unavailable are sent again by the client
    # (same key) and stored once space returns; nobody is told "not delivered",
    # the reader gets each line once.
    path = tmpfs / "h.sqlite3"
    running = spawn_broker("--history", str(path), "--max-rate", "0")
    alice = Client(running.router, "alice")
    bob = Client(running.router, "bob")
    try:
        alice.connect(timeout=5 * SCALE)
        bob.connect(timeout=5 * SCALE)
        with contextlib.suppress(OSError), open(tmpfs / "rest", "wb", buffering=0) as rest:
            while True:
                rest.write(b"\0" * 4096)
        texts = [f"{n:03d} " + "x" * 3000 for n in range(30)]
        for text in texts:
            alice.say(text)
        running.wait_for_log("cannot store lines: disk full", timeout=20)
        (tmpfs / "rest").unlink()
        got = [
            wait_for(bob, ev.Message, lambda e: e.nick == "alice", timeout=30).text for _ in texts
        ]
        # Each once. (Not necessarily in the order sent: a refused line is sent
        # again after a pause, and a later line may be stored before it.)
        assert sorted(got) == texts
        running.wait_for_log("storing lines again")
        # alice was told of no lost line (the refusals were retried, not reported)
        while True:
            try:
                event = alice.next_event(0.2)
            except TimeoutError:
                break
            assert not (isinstance(event, ev.Error) and event.req == "say"), event
    finally:
        alice.close()
        bob.close()
        running.stop()
    assert _stored(path)["lobby"] == list(range(1, 31))
