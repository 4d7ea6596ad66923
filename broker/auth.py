"""Who may connect: ZAP decisions for CURVE, and the key files they use.

With ``--curve-secret`` the broker's ROUTER and XPUB are CURVE servers, and the
broker answers ZeroMQ's authentication requests (ZAP, RFC 27) itself, from its
own poll loop (broker/server.py), on ``inproc://zeromq.zap.01``. This module
holds the decision, with no sockets: the request's frames in, the reply's
frames out. A handler in the broker's own loop, rather than
``zmq.auth.thread.ThreadAuthenticator``, keeps to one thread and one place
where state changes, and lets the reply carry the client's key as its
User-Id, which the core uses to bind a session (and a registered nickname) to
the key that made it.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from zmq.utils import z85

from protocol import ProtocolError, nick_key, validate_nick
from protocol.keys import (
    Z85_KEY_LENGTH,
    KeyFileError,
    load_key_directory,
    load_secret,
    parse_public_key,
)

__all__ = [
    "Z85_KEY_LENGTH",
    "ZAP_ENDPOINT",
    "KeyFileError",
    "ZapRequest",
    "decide",
    "load_allowed_keys",
    "load_nick_keys",
    "load_secret",
    "parse",
    "parse_public_key",
]

#: Where libzmq sends authentication requests for every socket of a context.
ZAP_ENDPOINT: Final = "inproc://zeromq.zap.01"
_ZAP_VERSION: Final = b"1.0"


@dataclass(frozen=True, slots=True)
class ZapRequest:
    """The parts of a ZAP request a decision needs."""

    request_id: bytes
    domain: str
    address: str
    mechanism: bytes
    credentials: tuple[bytes, ...]


def parse(frames: list[bytes]) -> ZapRequest | None:
    """A ZAP request from its frames, or None if they are not one (RFC 27)."""
    if len(frames) < 6 or frames[0] != _ZAP_VERSION:
        return None
    return ZapRequest(
        request_id=frames[1],
        domain=frames[2].decode("utf-8", "replace"),
        address=frames[3].decode("utf-8", "replace"),
        mechanism=frames[5],
        credentials=tuple(frames[6:]),
    )


def decide(frames: list[bytes], allowed: Collection[str] | None) -> tuple[list[bytes], str]:
    """Answer one ZAP request.

    ``allowed`` is the set of Z85 public keys let in, or None to let in any key
    (CURVE still encrypts and the key still identifies the session). Returns
    the reply frames and a line for the log. The User-Id of an accepted client
    is its Z85 public key.
    """
    request = parse(frames)
    if request is None:
        request_id = frames[1] if len(frames) > 1 else b""
        return _reply(request_id, b"500", "not a ZAP 1.0 request"), "malformed ZAP request"
    if request.mechanism != b"CURVE" or len(request.credentials) != 1:
        return (
            _reply(request.request_id, b"400", "only CURVE is accepted"),
            f"refused {request.mechanism.decode('ascii', 'replace')} client from "
            f"{request.address}: only CURVE is accepted",
        )
    raw = request.credentials[0]
    if len(raw) != 32:
        return _reply(request.request_id, b"400", "bad CURVE key"), "refused a bad CURVE key"
    key = z85.encode(raw).decode("ascii")
    if allowed is not None and key not in allowed:
        return (
            _reply(request.request_id, b"400", "key not allowed"),
            f"refused key {key} from {request.address}: not in the allow list",
        )
    return _reply(request.request_id, b"200", "OK", key), f"accepted key {key}"


def _reply(request_id: bytes, status: bytes, text: str, user: str = "") -> list[bytes]:
    return [_ZAP_VERSION, request_id, status, text.encode(), user.encode(), b""]


# --- key files ---------------------------------------------------------------
# Keys and key files are read by protocol/keys.py, shared with the client;
# load_secret, parse_public_key, KeyFileError and Z85_KEY_LENGTH are re-exported.


def load_allowed_keys(directory: str | os.PathLike[str]) -> frozenset[str]:
    """The Z85 public keys of every ``*.key`` file in ``directory`` (empty if
    there is none). Raises KeyFileError if ``directory`` is not a directory or
    a key file in it is not valid."""
    if not os.path.isdir(directory):
        raise KeyFileError(
            f"{os.fspath(directory)} is not a directory (--allow-keys takes a "
            "directory of *.key files)"
        )
    return load_key_directory(directory)


def load_nick_keys(path: str | os.PathLike[str]) -> dict[str, str]:
    """Registered nicknames from a text file: one ``NICK KEY`` per line, where
    KEY is a Z85 public key or a key file (relative to the file's directory);
    blank lines and lines starting with ``#`` are skipped. Returns
    ``nick_key(nick) -> Z85 key``. Raises KeyFileError."""
    base = Path(path).parent
    table: dict[str, str] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read {os.fspath(path)}: {exc}") from None
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{os.fspath(path)} line {number}"
        if len(fields) != 2:
            raise KeyFileError(f"{where}: expected NICK KEY")
        nick, key = fields
        try:
            validate_nick(nick)
        except ProtocolError as exc:
            raise KeyFileError(f"{where}: {exc.message}") from None
        candidate = key if len(key) == Z85_KEY_LENGTH else str(base / key)
        try:
            table[nick_key(nick)] = parse_public_key(candidate).decode("ascii")
        except KeyFileError as exc:
            raise KeyFileError(f"{where}: {exc}") from None
    return table
