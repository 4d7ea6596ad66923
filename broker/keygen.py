"""``chat-keygen PATH``: make a CURVE keypair for a broker or a client.

Writes ``PATH.key`` (the public key, to hand out) and ``PATH.key_secret``
(both keys, for its owner only), in the certificate format of
``zmq.auth.create_certificates``, so ``zmq.auth.load_certificate`` and
``--allow-keys`` directories read them. The secret file is created with mode
0600 in the same system call that creates it, so it is never readable by
others, not even for an instant; existing files are never overwritten.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import zmq

__all__ = ["EXIT_EXISTS", "EXIT_OK", "EXIT_OS_ERROR", "main", "write_keypair"]

EXIT_OK = 0
#: The output files already exist: nothing was written.
EXIT_EXISTS = 1
#: Any other failure to write (no such directory, permission denied...).
EXIT_OS_ERROR = 2

_PUBLIC_BANNER = """#   ****  Generated on {now} by chat-keygen  ****
#   ZeroMQ CURVE Public Certificate
#   Hand this file to whoever must recognise this key
#   (a broker's --allow-keys directory, or clients as --server-key).

"""
_SECRET_BANNER = """#   ****  Generated on {now} by chat-keygen  ****
#   ZeroMQ CURVE **Secret** Certificate
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

"""


def write_keypair(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Create ``PATH.key`` and ``PATH.key_secret``; returns their paths.

    Raises ValueError if ``path`` has no file name part (empty, ``dir/``,
    ``.``, ``..``: the files would be hidden ``.key`` files), FileExistsError
    if either exists (neither is then touched) and OSError for other failures
    (a half-written pair is removed).
    """
    base = os.fspath(path)
    if os.path.basename(base) in ("", ".", ".."):
        raise ValueError(
            f"{base!r} names no file: give a path and a name without the extension, e.g. keys/alice"
        )
    public_path, secret_path = Path(base + ".key"), Path(base + ".key_secret")
    for existing in (public_path, secret_path):
        if existing.exists() or existing.is_symlink():
            raise FileExistsError(f"{existing} already exists; not overwriting it")
    public, secret = zmq.curve_keypair()
    now = datetime.datetime.now().isoformat(timespec="seconds")
    curve = f'curve\n    public-key = "{public.decode()}"\n'
    created: list[Path] = []
    try:
        _create(
            secret_path,
            0o600,
            _SECRET_BANNER.format(now=now)
            + "metadata\n"
            + curve
            + f'    secret-key = "{secret.decode()}"\n',
        )
        created.append(secret_path)
        _create(public_path, 0o644, _PUBLIC_BANNER.format(now=now) + "metadata\n" + curve)
        created.append(public_path)
    except BaseException:
        for done in created:
            done.unlink(missing_ok=True)
        raise
    return public_path, secret_path


def _create(path: Path, mode: int, text: str) -> None:
    # O_EXCL: fail rather than follow a symlink or replace a file someone made
    # since we looked; the mode is applied at creation (less the umask).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            fd = -1
            handle.write(text)
    finally:
        if fd != -1:
            os.close(fd)


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of ``chat-keygen``."""
    parser = argparse.ArgumentParser(
        prog="chat-keygen",
        description="Write a CURVE keypair: PATH.key (public) and PATH.key_secret (secret, 0600).",
    )
    parser.add_argument("path", metavar="PATH", help="where to write, without the extension")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``chat-keygen``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        public_path, secret_path = write_keypair(args.path)
    except ValueError as exc:
        parser.error(str(exc))  # exits 2, like any other usage error
    except FileExistsError as exc:
        print(f"chat-keygen: {exc}", file=sys.stderr)
        return EXIT_EXISTS
    except OSError as exc:
        print(f"chat-keygen: cannot write {args.path}: {exc}", file=sys.stderr)
        return EXIT_OS_ERROR
    print(f"public key: {public_path}  (share it)")
    print(f"secret key: {secret_path}  (keep it; readable only by you)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
