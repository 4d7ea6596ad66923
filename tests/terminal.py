"""A program in a pseudo-terminal, seen through a terminal emulator (pyte).

What the tests assert on is the screen a user would see (rows of
characters, after every cursor move and redraw), not the byte stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pyte
from ptyprocess import PtyProcess

from tests.conftest import SCALE

__all__ = ["Terminal"]


class Terminal:
    """``argv`` running in a ``rows`` x ``columns`` pseudo-terminal."""

    def __init__(
        self, argv: list[str], env: dict[str, str], rows: int = 24, columns: int = 80
    ) -> None:
        self.screen = pyte.Screen(columns, rows)
        self._stream = pyte.ByteStream(self.screen)
        self._lock = threading.Lock()
        self.raw = bytearray()
        self.proc = PtyProcess.spawn(argv, env=env, dimensions=(rows, columns))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.proc.read(65536)
            except EOFError:
                return
            except OSError:
                return
            with self._lock:
                self.raw += data
                self._stream.feed(data)

    # --- looking -------------------------------------------------------------

    def lines(self) -> list[str]:
        """The screen's rows, trailing spaces removed."""
        with self._lock:
            return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        """The whole screen as one string, a row per line."""
        return "\n".join(self.lines())

    def wait(
        self, check: Callable[[list[str]], bool] | str, timeout: float = 10.0, why: str = ""
    ) -> list[str]:
        """Wait until ``check`` holds for the screen (or ``check`` appears on it)."""
        predicate = (
            (lambda rows: any(check in row for row in rows)) if isinstance(check, str) else check
        )
        deadline = time.monotonic() + timeout * SCALE
        while time.monotonic() < deadline:
            rows = self.lines()
            if predicate(rows):
                return rows
            time.sleep(0.02)
        raise AssertionError(
            f"screen never showed {why or check!r}; it shows:\n" + "\n".join(self.lines())
        )

    def settled(self, quiet: float = 0.3, timeout: float = 10.0) -> list[str]:
        """The screen once the program has written nothing for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout * SCALE
        while time.monotonic() < deadline:
            with self._lock:
                size = len(self.raw)
            time.sleep(quiet)
            with self._lock:
                if len(self.raw) == size:
                    return [line.rstrip() for line in self.screen.display]
        raise AssertionError("the program never stopped drawing:\n" + self.text())

    def row_with(self, text: str) -> str:
        """The first row holding ``text``."""
        for row in self.lines():
            if text in row:
                return row
        raise AssertionError(f"no row holds {text!r}:\n{self.text()}")

    def forget(self) -> None:
        """Blank the emulated screen, as if something had scribbled over it:
        only a full redraw brings the picture back."""
        with self._lock:
            self.screen.reset()

    # --- typing ----------------------------------------------------------------

    def send(self, data: str | bytes) -> None:
        """Type ``data`` (str is sent as UTF-8)."""
        self.proc.write(data.encode() if isinstance(data, str) else data)

    def paste(self, text: str) -> None:
        """A bracketed paste, as a terminal sends one."""
        self.send(b"\x1b[200~" + text.encode() + b"\x1b[201~")

    def resize(self, rows: int, columns: int) -> None:
        """Resize the terminal (the program gets SIGWINCH)."""
        with self._lock:
            self.screen.resize(rows, columns)
        self.proc.setwinsize(rows, columns)

    # --- ending ----------------------------------------------------------------

    def wait_exit(self, timeout: float = 10.0) -> int:
        """The exit status, once the program has ended."""
        deadline = time.monotonic() + timeout * SCALE
        while self.proc.isalive():
            if time.monotonic() > deadline:
                raise AssertionError("the program did not end:\n" + self.text())
            time.sleep(0.02)
        self._reader.join(timeout=2)
        status = self.proc.exitstatus
        return -1 if status is None else int(status)

    def close(self) -> None:
        """Kill the program if it still runs."""
        if self.proc.isalive():
            self.proc.terminate(force=True)
        self._reader.join(timeout=2)
