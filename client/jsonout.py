"""The ``--json`` mode's output: events written without ever blocking the session.

A script may stop reading our stdout for a while (busy, suspended, or simply
never reading). Writing to a full pipe from the event loop would stop the
session with it: no heartbeats, and the broker drops us as ``timeout``. So
events go to a bounded buffer that a thread writes out; the event loop only
appends to it.

Past the bound (``limit`` bytes not yet written) new events are dropped and
counted. Once the reader has taken half of the buffer, one ``overflow`` event
says how many were dropped, and normal output resumes (README "JSON mode").
A pipe whose reader is gone (``EPIPE``) discards output from then on.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections import deque

import msgspec

from client import events as ev

__all__ = ["DEFAULT_LIMIT", "EventWriter", "Overflow"]

#: Bytes of events that may wait unread before events are dropped: about
#: 50,000 chat lines, so only a reader stopped for good (or a very long time
#: under a flood) ever reaches it.
DEFAULT_LIMIT = 16 * 1024 * 1024


class Overflow(msgspec.Struct, frozen=True, kw_only=True, tag="overflow", tag_field="type"):
    """``dropped`` events were not written: stdout was not read and the buffer was full."""

    dropped: int


_encode_overflow = msgspec.json.Encoder().encode


class EventWriter:
    """Writes JSON lines to a file descriptor from a thread of its own.

    :meth:`emit` never blocks; :meth:`close` waits (bounded) for the rest.
    """

    def __init__(self, fd: int, limit: int = DEFAULT_LIMIT) -> None:
        self._fd = fd
        self._limit = max(1, limit)
        self._chunks: deque[bytes] = deque()
        self._buffered = 0  # bytes appended and not yet written
        self._dropping = 0  # events dropped since the last overflow event
        #: Events dropped in all (each also counted in an ``overflow`` event).
        self.dropped = 0
        #: The reader went away (EPIPE); output is discarded.
        self.broken = False
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="json-writer", daemon=True)
        self._thread.start()

    @property
    def buffered(self) -> int:
        """Bytes waiting to be written."""
        return self._buffered

    def emit(self, event: ev.Event | Overflow) -> None:
        """Queue one event (a JSON object and a newline); never blocks."""
        data = (
            _encode_overflow(event) if isinstance(event, Overflow) else ev.encode_event(event)
        ) + b"\n"
        with self._cond:
            if self.broken:
                return
            if self._dropping and self._buffered > self._limit // 2:
                # Resume only once the reader has made real room, so that
                # output does not flap between one event and one drop.
                self._drop()
                return
            if self._buffered + len(data) > self._limit:
                self._drop()
                return
            self._flush_overflow()
            self._append(data)

    def close(self, stall: float) -> bool:
        """Write what is left; give up once ``stall`` seconds pass with nothing
        written (a reader that stopped for good). Returns whether all was written."""
        with self._cond:
            self._flush_overflow()
            self._closing = True
            self._cond.notify_all()
            left = self._buffered
            deadline = time.monotonic() + stall
            while self._buffered and not self.broken:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
                if self._buffered < left:
                    left = self._buffered
                    deadline = time.monotonic() + stall
            return not self.broken

    # --- inside the lock ----------------------------------------------------------

    def _drop(self) -> None:
        self._dropping += 1
        self.dropped += 1

    def _flush_overflow(self) -> None:
        if self._dropping:
            self._append(_encode_overflow(Overflow(dropped=self._dropping)) + b"\n")
            self._dropping = 0

    def _append(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        self._cond.notify_all()

    # --- the writing thread --------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._chunks:
                    if self._closing:
                        return
                    self._cond.wait()
                data = b"".join(self._chunks)
                self._chunks.clear()
            # Outside the lock: this is where a reader that does not read blocks us.
            if not self._write_all(data):
                with self._cond:
                    self.broken = True
                    self._chunks.clear()
                    self._buffered = 0
                    self._cond.notify_all()
                return

    def _write_all(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.EBADF, errno.EINVAL):
                    return False
                raise
            view = view[written:]
            with self._cond:
                # Counted as it goes: close() measures a slow reader's progress.
                self._buffered -= written
                self._cond.notify_all()
        return True
