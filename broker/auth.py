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

import zmq
import zmq.auth
from zmq.utils import z85

from protocol import ProtocolError, nick_key, validate_nick

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
#: Length of a CURVE key in Z85 text.
Z85_KEY_LENGTH: Final = 40


class KeyFileError(ValueError):
    """A key, key file or key directory is missing or not valid."""


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


def load_secret(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """``(public, secret)`` Z85 keys from a ``.key_secret`` file written by
    ``chat-keygen`` (or zmq.auth.create_certificates). Raises KeyFileError."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read key file {os.fspath(path)}: {exc}") from None
    if secret is None:
        raise KeyFileError(
            f"{os.fspath(path)} holds no secret key (give the .key_secret file, not .key)"
        )
    _check_z85(public, path)
    _check_z85(secret, path)
    return public, secret


def parse_public_key(text: str) -> bytes:
    """A public key given as a file (``.key`` or ``.key_secret``) or as its
    40 Z85 characters; returns the Z85 bytes. Raises KeyFileError."""
    if len(text) == Z85_KEY_LENGTH and not os.path.exists(text):
        _check_z85(text.encode("ascii", "replace"), "the key given")
        return text.encode("ascii")
    try:
        public, _ = zmq.auth.load_certificate(text)
    except (OSError, ValueError) as exc:
        raise KeyFileError(
            f"{text!r} is neither a key file nor a {Z85_KEY_LENGTH}-character Z85 key ({exc})"
        ) from None
    _check_z85(public, text)
    return public


def load_allowed_keys(directory: str | os.PathLike[str]) -> frozenset[str]:
    """The Z85 public keys of every ``*.key`` file in ``directory`` (empty if
    there is none). Raises KeyFileError if ``directory`` is not a directory or
    a key file in it is not valid."""
    if not os.path.isdir(directory):
        # zmq.auth would say "Invalid certificate directory"; say what is wanted.
        raise KeyFileError(
            f"{os.fspath(directory)} is not a directory (--allow-keys takes a "
            "directory of *.key files)"
        )
    try:
        certificates = zmq.auth.load_certificates(directory)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read allowed keys in {os.fspath(directory)}: {exc}") from None
    keys = frozenset(key.decode("ascii", "replace") for key in certificates)
    for key in keys:
        _check_z85(key.encode(), directory)
    return keys


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
        table[nick_key(nick)] = parse_public_key(candidate).decode("ascii")
    return table


def _check_z85(key: bytes, where: str | os.PathLike[str]) -> None:
    try:
        valid = len(key) == Z85_KEY_LENGTH and len(z85.decode(key)) == 32
    except (ValueError, KeyError):  # what z85.decode raises for bad input
        valid = False
    if not valid:
        raise KeyFileError(f"{os.fspath(where)}: not a {Z85_KEY_LENGTH}-character Z85 CURVE key")
