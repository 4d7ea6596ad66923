"""Rules for nicknames, room names, text and idempotency keys (docs/PROTOCOL.md §6).

Every function returns the value to use (canonical where that matters) or
raises :class:`ProtocolError` with a stable code and a reason a person can read.
"""

from __future__ import annotations

import re

from protocol.errors import ErrorCode, ProtocolError

__all__ = [
    "MAX_AWAY_BYTES",
    "MAX_KEY_LENGTH",
    "MAX_NICK_LENGTH",
    "MAX_ROOM_LENGTH",
    "MAX_TEXT_BYTES",
    "MAX_TOPIC_BYTES",
    "NICK_PUNCTUATION",
    "RESERVED_NICKS",
    "nick_key",
    "validate_away",
    "validate_key",
    "validate_nick",
    "validate_room",
    "validate_text",
    "validate_topic",
]

MAX_NICK_LENGTH = 32
MAX_ROOM_LENGTH = 32
MAX_TEXT_BYTES = 4096
MAX_KEY_LENGTH = 64
#: Longest room topic and away message, in bytes of UTF-8
#: (docs/PROTOCOL.md "Room topics" and "Away").
MAX_TOPIC_BYTES = 512
MAX_AWAY_BYTES = 256

#: Punctuation allowed in nicknames besides ASCII letters and digits.
NICK_PUNCTUATION = "_-.[]{}^|"

#: Names nobody may take, compared case-insensitively: they would let a user
#: pass for the system itself.
RESERVED_NICKS = frozenset(
    {"server", "broker", "system", "admin", "root", "everyone", "all", "nobody", "chat"}
)

_NICK_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-.\[\]{}^|]*")
_ROOM_RE = re.compile(r"[a-z0-9][a-z0-9_\-.]*")
_KEY_RE = re.compile(r"[A-Za-z0-9_\-.:]+")


def nick_key(nick: str) -> str:
    """The form under which nicknames are compared: ``Alice`` and ``alice`` clash."""
    return nick.lower()


def validate_nick(nick: str) -> str:
    """Check a nickname and return it unchanged (case is kept for display).

    Raises ProtocolError(nick_invalid) saying what is wrong.
    """
    if not nick:
        raise ProtocolError(ErrorCode.NICK_INVALID, "a nickname cannot be empty")
    if len(nick) > MAX_NICK_LENGTH:
        raise ProtocolError(
            ErrorCode.NICK_INVALID,
            f"a nickname is at most {MAX_NICK_LENGTH} characters (got {len(nick)})",
        )
    if _NICK_RE.fullmatch(nick) is None:
        raise ProtocolError(
            ErrorCode.NICK_INVALID,
            "a nickname uses only ASCII letters, digits and "
            f"{' '.join(NICK_PUNCTUATION)}, and starts with a letter, digit or _",
        )
    if nick_key(nick) in RESERVED_NICKS:
        raise ProtocolError(ErrorCode.NICK_INVALID, f"the nickname {nick!r} is reserved")
    return nick


def validate_room(room: str) -> str:
    """Check a room name and return its canonical form.

    Room names are case-insensitive: the canonical form is lower case, and a
    leading ``#`` (IRC habit) is dropped. Raises ProtocolError(room_invalid).
    """
    canonical = room[1:] if room.startswith("#") else room
    # ASCII is checked before lower-casing: str.lower() maps some non-ASCII
    # look-alikes to ASCII (the Kelvin sign U+212A becomes "k").
    ascii_only = canonical.isascii()
    canonical = canonical.lower()
    if not canonical:
        raise ProtocolError(ErrorCode.ROOM_INVALID, "a room name cannot be empty")
    if len(canonical) > MAX_ROOM_LENGTH:
        raise ProtocolError(
            ErrorCode.ROOM_INVALID,
            f"a room name is at most {MAX_ROOM_LENGTH} characters (got {len(canonical)})",
        )
    if not ascii_only or _ROOM_RE.fullmatch(canonical) is None:
        raise ProtocolError(
            ErrorCode.ROOM_INVALID,
            "a room name uses only ASCII letters, digits and _ - . "
            "and starts with a letter or digit",
        )
    return canonical


def validate_text(text: str) -> str:
    """Check the text of a chat line and return it unchanged.

    Raises ProtocolError with text_empty (nothing but white space),
    text_too_long (over MAX_TEXT_BYTES of UTF-8) or bad_encoding (lone surrogates).
    """
    if not text or text.isspace():
        raise ProtocolError(ErrorCode.TEXT_EMPTY, "a line cannot be empty")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ProtocolError(ErrorCode.BAD_ENCODING, "text is not valid Unicode") from None
    if size > MAX_TEXT_BYTES:
        raise ProtocolError(
            ErrorCode.TEXT_TOO_LONG,
            f"a line is at most {MAX_TEXT_BYTES} bytes of UTF-8 (got {size})",
        )
    return text


def validate_key(key: str) -> str:
    """Check a client-chosen idempotency key (1-64 of ``A-Z a-z 0-9 _ - . :``)."""
    if len(key) > MAX_KEY_LENGTH or _KEY_RE.fullmatch(key) is None:
        raise ProtocolError(
            ErrorCode.KEY_INVALID,
            f"a key is 1 to {MAX_KEY_LENGTH} of the characters A-Z a-z 0-9 _ - . :",
        )
    return key


def _validate_short(text: str, limit: int, what: str) -> str:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ProtocolError(ErrorCode.BAD_ENCODING, f"{what} is not valid Unicode") from None
    if size > limit:
        raise ProtocolError(
            ErrorCode.TEXT_TOO_LONG, f"{what} is at most {limit} bytes of UTF-8 (got {size})"
        )
    return text


def validate_topic(text: str) -> str:
    """Check a room topic and return it with surrounding white space removed
    ("" clears the topic). Raises ProtocolError(text_too_long, bad_encoding)."""
    return _validate_short(text, MAX_TOPIC_BYTES, "a topic").strip()


def validate_away(text: str) -> str:
    """Check an away message and return it with surrounding white space
    removed ("" means back). Raises ProtocolError(text_too_long, bad_encoding)."""
    return _validate_short(text, MAX_AWAY_BYTES, "an away message").strip()
