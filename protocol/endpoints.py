"""ZeroMQ endpoint strings, checked before a socket ever sees them.

libzmq's own checks come late and are lenient in surprising ways: a bind to
``tcp://127.0.0.1:99999`` succeeds on a port nobody asked for (the port is
truncated to 16 bits), and a garbage endpoint handed to clients in a welcome
only fails once every client tries to connect. :func:`check_endpoint` refuses
such text up front with a message a person can act on.

Accepted forms (``transport://address``):

* ``tcp://HOST:PORT``: HOST is a host or interface name (``localhost``,
  ``eth0``, ``chat.example.org``), an IPv4 address, an IPv6 address in
  brackets (``[::1]``), or, to bind only, ``*`` (every interface). PORT is
  1 to 65535, or, to bind only, ``*`` (an ephemeral port the system picks).
* ``ipc://PATH``: a non-empty path (``ipc://@name`` is Linux's abstract
  namespace); ``ipc://*`` to bind only (a temporary path).
* ``inproc://NAME``: a non-empty name.

Nothing here imports zmq: it is pure text checking, shared by the broker and
client command lines.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from protocol.errors import ErrorCode, ProtocolError

__all__ = ["TRANSPORTS", "check_endpoint"]

#: The transports :func:`check_endpoint` accepts.
TRANSPORTS: Final = ("tcp", "ipc", "inproc")

# One DNS label or interface name: letters, digits, '-' and '_' (interface
# names such as "br_lan" have underscores), at most 63 characters.
_LABEL: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_IPV4_LIKE: Final = re.compile(r"[0-9.]+")
_MAX_HOST: Final = 253
# Linux's sockaddr_un holds 108 bytes with the terminating NUL.
_MAX_IPC_PATH: Final = 107
#: Longest endpoint quoted whole in an error message.
_SHOWN: Final = 80


def check_endpoint(text: str, *, bind: bool) -> str:
    """Return ``text`` if it is a valid ZeroMQ endpoint, else raise.

    ``bind`` says whether the endpoint is for binding (wildcard host and port
    ``*`` allowed) or for connecting (a real host and port needed).

    Raises:
        ProtocolError: with code ``bad_endpoint`` and a message saying what is
            wrong and what is expected.
    """
    if not text:
        raise _bad(text, "it is empty; expected TRANSPORT://ADDRESS, e.g. tcp://127.0.0.1:5555")
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise _bad(text, "it contains spaces or control characters")
    transport, sep, address = text.partition("://")
    if not sep:
        raise _bad(text, "expected TRANSPORT://ADDRESS, e.g. tcp://127.0.0.1:5555")
    if transport not in TRANSPORTS:
        raise _bad(
            text,
            f"unknown transport {transport!r}; expected one of " + ", ".join(TRANSPORTS),
        )
    if transport == "tcp":
        _check_tcp(text, address, bind)
    elif transport == "ipc":
        _check_ipc(text, address, bind)
    elif not address:
        raise _bad(text, "an inproc endpoint needs a name")
    return text


def _check_tcp(text: str, address: str, bind: bool) -> None:
    host, sep, port = address.rpartition(":")
    if not sep:
        raise _bad(text, "expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555")
    if port == "*":
        if not bind:
            raise _bad(text, "port '*' (any free port) is only for binding; give a port number")
    # The length check comes first: int() refuses strings of thousands of digits.
    elif not (port.isascii() and port.isdigit() and len(port) <= 5) or not 1 <= int(port) <= 65535:
        raise _bad(text, f"port {_cut(port)!r} is not a number from 1 to 65535")
    if host == "*":
        if not bind:
            raise _bad(text, "host '*' (every interface) is only for binding; give a host")
        return
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _bad(text, f"{_cut(host)} is not an IPv6 address") from None
        return
    if ":" in host:
        raise _bad(text, f"an IPv6 address goes in brackets: {_cut(f'tcp://[{host}]:{port}')}")
    if not host:
        raise _bad(text, "the host is missing; expected tcp://HOST:PORT")
    if _IPV4_LIKE.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise _bad(text, f"{_cut(host)} is not an IPv4 address") from None
        return
    labels = host.removesuffix(".").split(".")
    if len(host) > _MAX_HOST or not all(_LABEL.fullmatch(label) for label in labels):
        raise _bad(text, f"{_cut(host)!r} is not a host name, IPv4 address or [IPv6] address")


def _check_ipc(text: str, path: str, bind: bool) -> None:
    if not path:
        raise _bad(text, "an ipc endpoint needs a path, e.g. ipc:///tmp/chat.sock")
    if path == "*" and not bind:
        raise _bad(text, "ipc://* (a temporary path) is only for binding; give a path")
    if len(path.encode("utf-8", "surrogatepass")) > _MAX_IPC_PATH:
        raise _bad(text, f"an ipc path is at most {_MAX_IPC_PATH} bytes")


def _bad(text: str, why: str) -> ProtocolError:
    # repr() keeps a hostile or mistyped endpoint printable in the message;
    # the cut keeps a pasted screenful from drowning the reason.
    return ProtocolError(ErrorCode.BAD_ENDPOINT, f"bad endpoint {_cut(text)!r}: {why}")


def _cut(part: str) -> str:
    return part if len(part) <= _SHOWN else part[: _SHOWN - 3] + "..."
