"""One broker per history file: an exclusive lock on a side file.

Two brokers writing one history file would number the same rooms
independently (docs/PROTOCOL.md §8), so the second one must refuse to start.
The lock is ``flock`` on ``<history>.lock``, not on the database itself:
SQLite's own POSIX locks on the database are released whenever any descriptor
of the file is closed, and its ``locking_mode=EXCLUSIVE`` would also shut out
the broker's own checkpoint connection. The kernel drops a ``flock`` when its
holder dies, even by ``kill -9``, so a stale file never blocks a restart.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from broker.history import StorageError

__all__ = ["HeldLock", "lock_path"]


def lock_path(path: Path) -> Path:
    """The side file that guards ``path``."""
    return path.with_name(path.name + ".lock")


class HeldLock:
    """The exclusive lock of a history file, held until :meth:`release`.

    Raises StorageError (a sentence for the operator) if another process holds
    it or the side file cannot be created (a read-only file system, say).
    """

    def __init__(self, path: Path) -> None:
        side = lock_path(path)
        try:
            fd = os.open(side, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            reason = "read-only file system" if exc.errno == errno.EROFS else exc.strerror
            raise StorageError(f"cannot create the lock file {side}: {reason}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                who = f"another broker (pid {holder})" if holder.isdigit() else "another process"
                raise StorageError(
                    f"{path} is in use by {who}; one history file serves one broker"
                ) from None
            raise StorageError(f"cannot lock {side}: {exc.strerror}") from None
        # Who holds it, for the message above; best effort (a full disk).
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Drop the lock (the side file stays: removing it would race a starter)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
