"""client.jsonout.EventWriter over a real pipe nobody reads, then drains."""

from __future__ import annotations

import json
import os
import threading
import time

from client import events as ev
from client.jsonout import EventWriter


def line(n: int) -> ev.Message:
    return ev.Message(room="r", nick="n", text=f"{n:06d} " + "x" * 200, ts=0.0, id=str(n), seq=n)


def test_a_reader_that_stops_costs_events_not_the_writer() -> None:
    read_fd, write_fd = os.pipe()
    writer = EventWriter(write_fd, limit=4096)
    try:
        started = time.monotonic()
        for n in range(2000):  # ~480 KB: far more than the pipe and the buffer hold
            writer.emit(line(n))
        assert time.monotonic() - started < 2, "emit() blocked"
        assert writer.dropped > 0 and writer.buffered <= 4096
        chunks: list[bytes] = []
        reader = threading.Thread(
            target=lambda: chunks.extend(iter(lambda: os.read(read_fd, 65536), b""))
        )
        reader.start()
        # Once the reader took half of the buffer, the next event is preceded
        # by the count of what was dropped.
        deadline = time.monotonic() + 5
        while writer.buffered > 2048 and time.monotonic() < deadline:
            time.sleep(0.01)
        writer.emit(line(5000))
        assert writer.close(stall=5)
        os.close(write_fd)
        reader.join(5)
    finally:
        os.close(read_fd)
    events = [json.loads(raw) for raw in b"".join(chunks).splitlines()]
    messages = [e for e in events if e["type"] == "message"]
    overflow = [e for e in events if e["type"] == "overflow"]
    # Each run of drops is counted where it happened (the pipe took some
    # output while the loop above still emitted, so there may be several).
    assert overflow and sum(e["dropped"] for e in overflow) == writer.dropped
    assert events[-2:] == [overflow[-1], json.loads(ev.encode_event(line(5000)))]
    assert len(messages) - 1 + writer.dropped == 2000
    numbers = [m["seq"] for m in messages]
    assert numbers == sorted(numbers)


def test_close_gives_up_on_a_reader_that_never_reads() -> None:
    read_fd, write_fd = os.pipe()
    writer = EventWriter(write_fd, limit=1 << 20)
    try:
        for n in range(1000):
            writer.emit(line(n))
        assert not writer.close(stall=0.2)
    finally:
        os.close(read_fd)  # unblocks the writing thread (EPIPE)
        os.close(write_fd)


def test_a_closed_pipe_discards_output() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    writer = EventWriter(write_fd)
    writer.emit(line(1))
    writer.close(stall=1)
    assert writer.broken
    writer.emit(line(2))  # no error, nothing written
    os.close(write_fd)
