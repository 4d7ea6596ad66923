"""The project's one exception hierarchy.

::

    ChatError                      root of every error this project raises
    ├── ProtocolError              bytes that are not valid protocol v1, or a
    │                              request the protocol refuses; carries a
    │                              stable ``code`` (see ErrorCode, docs/PROTOCOL.md §7)
    ├── KeyFileError               a CURVE key, key file or key directory given
    │                              by the user is missing or not valid (also a
    │                              ValueError; protocol/keys.py)
    └── ClientError                raised by the client library (client/)
        ├── JoinRefused            the broker refused our hello (nick_taken, ...)
        ├── RequestFailed          the broker answered a request with an error
        ├── BrokerUnreachable      no answer from the broker in time
        └── ConnectionClosed       the session is over (we left, or the broker
                                   shut down); ``reason`` says which

Errors raised while *we* build a message are "local" (a bug or bad argument on
our side); errors raised while decoding what a peer sent are "remote" and the
broker answers them with an ``error`` reply carrying the same code.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "BrokerUnreachable",
    "ChatError",
    "ClientError",
    "ConnectionClosed",
    "ErrorCode",
    "JoinRefused",
    "KeyFileError",
    "ProtocolError",
    "RequestFailed",
]


class ErrorCode(StrEnum):
    """Stable error codes carried by ``error`` replies (docs/PROTOCOL.md §7)."""

    BAD_FRAME = "bad_frame"  # wrong number of frames, or not JSON at all
    BAD_ENCODING = "bad_encoding"  # not valid UTF-8
    BAD_MESSAGE = "bad_message"  # JSON, but missing fields or wrong field types
    UNKNOWN_TYPE = "unknown_type"  # "type" missing or not a known request
    BAD_VERSION = "bad_version"  # hello with a protocol version we do not speak
    NOT_JOINED = "not_joined"  # no session: never said hello, left, timed out, broker restarted
    SYNCING = "syncing"  # the session is still waiting for its first sync (§5.1): retry later
    ALREADY_JOINED = "already_joined"  # a second hello on one connection
    NICK_TAKEN = "nick_taken"
    NICK_INVALID = "nick_invalid"
    ROOM_INVALID = "room_invalid"
    NOT_IN_ROOM = "not_in_room"
    NO_SUCH_NICK = "no_such_nick"
    TEXT_EMPTY = "text_empty"
    TEXT_TOO_LONG = "text_too_long"
    KEY_INVALID = "key_invalid"
    SYNC_TIMEOUT = "sync_timeout"  # the SUB socket never subscribed in time
    TOO_MANY_ROOMS = "too_many_rooms"
    TOO_MANY_CLIENTS = "too_many_clients"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"  # the broker's storage failed: nothing stored, retry later
    SESSION_INVALID = "session_invalid"  # resume with an unknown session token
    BAD_ENDPOINT = "bad_endpoint"  # local only: a malformed ZeroMQ endpoint (protocol/endpoints.py)


class ChatError(Exception):
    """Root of every exception raised by this project."""


class ProtocolError(ChatError):
    """A message is not valid protocol v1, or a request is refused.

    ``code`` is one of :class:`ErrorCode`; ``message`` is for humans.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class KeyFileError(ChatError, ValueError):
    """A CURVE key, key file or key directory is missing or not valid.

    Local configuration, not the wire: the message names the key or file, and
    the command line that read it adds the flag. A ValueError too, since it is
    bad input to the function that raised it.
    """


class ClientError(ChatError):
    """Base of the errors raised by the client library."""


class JoinRefused(ClientError):
    """The broker refused to let us in (``code`` says why, e.g. ``nick_taken``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RequestFailed(ClientError):
    """The broker answered one of our requests with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class BrokerUnreachable(ClientError):
    """The broker did not answer within the allowed time."""


class ConnectionClosed(ClientError):
    """The session has ended; ``reason`` is ``exit`` (we left) or ``shutdown``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"connection closed: {reason}")
        self.reason = reason
