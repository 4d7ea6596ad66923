"""CURVE keys as users give them: 40 Z85 characters, or a key file.

Shared by the broker (``--curve-secret``, ``--allow-keys``, ``--nick-keys``)
and the client (``--server-key``, ``--curve-secret``), so that both accept
and refuse the same things with the same words. Nothing here imports zmq
(protocol/ never does): Z85 (ZeroMQ RFC 32) is checked in plain Python, and
key files are read in the text format ``zmq.auth.create_certificates`` and
``chat-keygen`` write::

    curve
        public-key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
        secret-key = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"

The reader follows ``zmq.auth.load_certificate``: the first ``public-key``
and ``secret-key`` lines count, quotes and blanks around the value are
dropped, ``#`` starts a comment line. Every error is a
:class:`~protocol.errors.KeyFileError` whose message names the key or the
file; a command line puts its flag in front.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from protocol.errors import KeyFileError

__all__ = [
    "Z85_KEY_LENGTH",
    "KeyFileError",
    "check_z85_key",
    "is_z85_key",
    "load_key_directory",
    "load_secret",
    "parse_public_key",
    "read_key_file",
]

#: Length of a CURVE key (32 bytes) in Z85 text.
Z85_KEY_LENGTH: Final = 40
#: The Z85 alphabet (RFC 32), in digit order.
_Z85_ALPHABET: Final = (
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
_Z85_DIGIT: Final = {ord(c): i for i, c in enumerate(_Z85_ALPHABET)}
_GROUP_LIMIT: Final = 1 << 32


def is_z85_key(key: str | bytes) -> bool:
    """Whether ``key`` is a CURVE key in Z85: 40 characters of the Z85
    alphabet, each group of 5 worth less than 2**32 (a group above that would
    not decode to 4 bytes)."""
    if isinstance(key, str):
        if not key.isascii():
            return False  # "replace" would turn it into "?", a Z85 digit
        data = key.encode("ascii")
    else:
        data = key
    if len(data) != Z85_KEY_LENGTH:
        return False
    for start in range(0, Z85_KEY_LENGTH, 5):
        value = 0
        for byte in data[start : start + 5]:
            digit = _Z85_DIGIT.get(byte)
            if digit is None:
                return False
            value = value * 85 + digit
        if value >= _GROUP_LIMIT:
            return False
    return True


def check_z85_key(key: str | bytes, where: str | os.PathLike[str]) -> bytes:
    """``key`` as Z85 bytes if it is a CURVE key (:func:`is_z85_key`).

    Raises KeyFileError naming ``where`` (the file, or the key as given).
    """
    if not is_z85_key(key):
        raise KeyFileError(f"{os.fspath(where)}: not a {Z85_KEY_LENGTH}-character Z85 CURVE key")
    return key.encode("ascii") if isinstance(key, str) else bytes(key)


def read_key_file(path: str | os.PathLike[str]) -> tuple[bytes, bytes | None]:
    """``(public, secret)`` as written in a key file; ``secret`` is None for a
    public ``.key`` file. The keys are checked (:func:`check_z85_key`).

    Raises KeyFileError if the file cannot be read, holds no public key, or
    holds a key that is not valid.
    """
    public: bytes | None = None
    secret: bytes | None = None
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {os.fspath(path)}: {exc}") from None
    for raw in lines:
        line = raw.strip()
        if line.startswith(b"#") or b"=" not in line:
            continue
        value = line.split(b"=", 1)[1].strip(b" \t'\"")
        if line.startswith(b"public-key") and public is None:
            public = value
        elif line.startswith(b"secret-key") and secret is None:
            secret = value
    if public is None:
        raise KeyFileError(f"{os.fspath(path)} holds no public key (not a key file?)")
    check_z85_key(public, path)
    if secret is not None:
        check_z85_key(secret, path)
    return public, secret


def load_secret(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """``(public, secret)`` Z85 keys from a ``.key_secret`` file written by
    ``chat-keygen`` (or zmq.auth.create_certificates). Raises KeyFileError."""
    public, secret = read_key_file(path)
    if secret is None:
        raise KeyFileError(
            f"{os.fspath(path)} holds no secret key (give the .key_secret file, not .key)"
        )
    return public, secret


def parse_public_key(text: str) -> bytes:
    """A public key given as a file (``.key`` or ``.key_secret``) or as its
    40 Z85 characters; returns the Z85 bytes. Raises KeyFileError."""
    if len(text) == Z85_KEY_LENGTH and not os.path.exists(text):
        return check_z85_key(text, repr(text))
    if not os.path.isfile(text):
        raise KeyFileError(
            f"{text!r} is neither a key file nor a {Z85_KEY_LENGTH}-character Z85 key"
        )
    public, _ = read_key_file(text)
    return public


def load_key_directory(directory: str | os.PathLike[str]) -> frozenset[str]:
    """The Z85 public keys of every ``*.key`` file in ``directory`` (empty if
    there is none). Raises KeyFileError if ``directory`` is not a directory or
    a key file in it is not valid."""
    if not os.path.isdir(directory):
        raise KeyFileError(f"{os.fspath(directory)} is not a directory")
    keys = set()
    for path in sorted(Path(directory).glob("*.key")):
        public, _ = read_key_file(path)
        keys.add(public.decode("ascii"))
    return frozenset(keys)
