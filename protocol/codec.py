"""Encoding and decoding between messages and ZeroMQ frames (docs/PROTOCOL.md §3).

* A request or reply is exactly one frame: a UTF-8 JSON object.
* A broadcast is two frames: the topic (``room/<name>/``) and the JSON object.
* The broker may send several replies to one client, or several broadcasts to
  one room, in one frame: a *batch*, the JSON array of their objects
  (:func:`pack`, :func:`unpack`).

Decoders raise only :class:`ProtocolError`, whatever the input.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import PROTOCOL_VERSION, Broadcast, Reply, Request

__all__ = [
    "BATCH_BYTES",
    "SYNC_PREFIX",
    "decode_broadcast",
    "decode_reply",
    "decode_request",
    "describe_request",
    "encode",
    "encode_broadcast",
    "join_frames",
    "pack",
    "pack_messages",
    "room_topic",
    "sync_topic",
    "unpack",
]

#: Prefix of the topics a client subscribes to prove its SUB socket is live.
SYNC_PREFIX = b"sync/"
#: Most bytes the broker packs into one batch frame: libzmq's own write size,
#: enough to carry dozens of lines, small enough that a slow subscriber's
#: queue of frames (its high-water mark counts frames) stays bounded.
BATCH_BYTES: Final = 8192

_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(Request)
_reply_decoder = msgspec.json.Decoder(Reply)
_broadcast_decoder = msgspec.json.Decoder(Broadcast)
_batch_decoder = msgspec.json.Decoder(list[msgspec.Raw])

_REQUEST_TYPES = frozenset(
    {
        "hello",
        "say",
        "msg",
        "join",
        "part",
        "nick",
        "who",
        "rooms",
        "history",
        "ping",
        "bye",
        "topic",
        "away",
    }
)
_REPLY_TYPES = frozenset(
    {
        "welcome",
        "joined",
        "parted",
        "renamed",
        "who",
        "rooms",
        "private",
        "ack",
        "error",
        "pong",
        "history",
        "shutdown",
        "goodbye",
        "topic",
        "away",
    }
)
_BROADCAST_TYPES = frozenset({"message", "join", "joins", "leave", "nick", "topic", "away"})
#: What a decoder may raise on bad input; anything else is a bug of ours.
_DECODE_ERRORS = (
    msgspec.DecodeError,
    msgspec.ValidationError,
    UnicodeDecodeError,
    ValueError,
    RecursionError,  # nesting deeper than the interpreter allows: a few KiB of "["
)


def room_topic(room: str) -> bytes:
    """The PUB topic of a (canonical) room name; the trailing ``/`` stops
    ``room/a/`` from matching ``room/ab/`` as a prefix."""
    return b"room/" + room.encode() + b"/"


def sync_topic(session: str, number: int) -> bytes:
    """The topic a client subscribes to, last, to prove its subscriptions are live."""
    return b"%s%s/%d/" % (SYNC_PREFIX, session.encode(), number)


def encode(message: Request | Reply | Broadcast) -> bytes:
    """One message as the JSON body frame."""
    return _encoder.encode(message)


#: :func:`encode` without the Python call around it: the broker's loop
#: encodes two bodies per line (same bytes as :func:`encode`).
encode_body: Final[Callable[[Request | Reply | Broadcast], bytes]] = _encoder.encode


def encode_broadcast(message: Broadcast) -> list[bytes]:
    """A broadcast as its two frames: topic and body."""
    return [room_topic(message.room), _encoder.encode(message)]


def pack(bodies: list[bytes], limit: int = BATCH_BYTES) -> list[bytes]:
    """Encoded messages bound for one client (or one room), packed in order
    into as few frames as stay within ``limit`` bytes: a lone message as it
    is, several as a batch (a JSON array). A message longer than ``limit``
    travels alone."""
    if len(bodies) == 1:
        return bodies
    frames: list[bytes] = []
    chunk: list[bytes] = []
    size = 1
    for body in bodies:
        if chunk and size + len(body) + 1 > limit:
            frames.append(chunk[0] if len(chunk) == 1 else b"[" + b",".join(chunk) + b"]")
            chunk = []
            size = 1
        chunk.append(body)
        size += len(body) + 1
    if chunk:
        frames.append(chunk[0] if len(chunk) == 1 else b"[" + b",".join(chunk) + b"]")
    return frames


def pack_messages(
    messages: Sequence[Request | Reply | Broadcast], limit: int = BATCH_BYTES
) -> list[bytes]:
    """What ``pack([encode(m) for m in messages], limit)`` returns, or frames
    as valid (in order, each within ``limit`` unless one message alone is
    longer, a lone message as it is), with one encoder call per frame instead
    of one per message plus a Python loop over them (docs/PERFORMANCE.md).
    Everything fits one frame in the common case; otherwise the frames hold
    as many messages as the sizes seen so far suggest (the first message's,
    then each chunk's), fewer if one comes out too long."""
    count = len(messages)
    first = _encoder.encode(messages[0])
    if count == 1:
        return [first]
    per = len(first) + 1.0  # bytes per message, its comma included
    if per * count < limit:  # likely to fit: one call for all
        whole = _encoder.encode(messages)
        if len(whole) <= limit:
            return [whole]
        per = len(whole) / count
    frames: list[bytes] = []
    start = 0
    while start < count:
        # 5 % short of the estimate: messages a little longer than those
        # measured (growing ids, counters) then rarely cost a second try.
        chunk = messages[start : start + max(1, int(0.95 * (limit - 1) / per))]
        if len(chunk) == 1:
            frames.append(_encoder.encode(chunk[0]))
            start += 1
            continue
        frame = _encoder.encode(chunk)
        if len(frame) > limit:
            # Longer messages than the average so far: fewer per frame (the
            # new estimate fits strictly fewer than this chunk, so it ends).
            per = len(frame) / len(chunk)
            continue
        frames.append(frame)
        start += len(chunk)
    return frames


def join_frames(frames: Sequence[bytes]) -> bytes:
    """The JSON array of every message in ``frames`` (from :func:`pack` or
    :func:`pack_messages`: each a lone message or a batch), in order: the
    same bytes as encoding the list of those messages, made by joining bytes
    instead of encoding again (the broker stores a room's lines of a turn as
    that array, docs/PERFORMANCE.md)."""
    if len(frames) == 1:
        frame = frames[0]
        return frame if frame[:1] == b"[" else b"[" + frame + b"]"
    return b"[" + b",".join([f[1:-1] if f[:1] == b"[" else f for f in frames]) + b"]"


def unpack(frame: bytes) -> list[bytes]:
    """The encoded messages in one frame from the broker, in order: the frame
    itself, or each element if it is a batch (it begins with ``[``). Decode
    each with :func:`decode_reply` or :func:`decode_broadcast`, so that one
    message a client does not understand costs it only that message."""
    if frame[:1] != b"[":
        return [frame]
    try:
        return [bytes(raw) for raw in _batch_decoder.decode(frame)]
    except _DECODE_ERRORS:
        raise ProtocolError(ErrorCode.BAD_FRAME, "a batch that is not a JSON array") from None


def decode_request(frames: list[bytes]) -> Request:
    """Decode what a client's DEALER sent (the frames after the routing id)."""
    if len(frames) != 1:
        raise ProtocolError(
            ErrorCode.BAD_FRAME, f"a request is exactly one frame (got {len(frames)})"
        )
    # The broker's hot path: try the decoder inline, one call fewer per request.
    frame = frames[0]
    try:
        message = _request_decoder.decode(frame)
    except _DECODE_ERRORS:
        pass
    else:
        # msgspec checks the UTF-8 of the strings it decodes but skips unknown
        # fields unread (§2: bad bytes anywhere are bad_encoding). An ASCII
        # frame, nearly every one, is valid UTF-8: a scan of the bytes, no copy.
        if frame.isascii() or _is_utf8(frame):
            return message
    return _decode(_request_decoder, frame, _REQUEST_TYPES, "request")  # type: ignore[no-any-return]


def decode_reply(frames: list[bytes]) -> Reply:
    """Decode what the broker sent to our DEALER."""
    if len(frames) != 1:
        raise ProtocolError(
            ErrorCode.BAD_FRAME, f"a reply is exactly one frame (got {len(frames)})"
        )
    return _decode(_reply_decoder, frames[0], _REPLY_TYPES, "reply")  # type: ignore[no-any-return]


def decode_broadcast(frames: list[bytes]) -> Broadcast:
    """Decode what arrived on a SUB socket (topic frame and body)."""
    if len(frames) != 2:
        raise ProtocolError(
            ErrorCode.BAD_FRAME, f"a broadcast is exactly two frames (got {len(frames)})"
        )
    message: Broadcast = _decode(_broadcast_decoder, frames[1], _BROADCAST_TYPES, "broadcast")
    if frames[0] != room_topic(message.room):
        raise ProtocolError(ErrorCode.BAD_FRAME, "the topic frame does not match the room")
    return message


def describe_request(frames: list[bytes]) -> tuple[str | None, str | None, str | None]:
    """Best-effort ``type``, ``key`` and ``room`` of a refused request, for the
    error reply to echo (§5 ``error``): only from a frame that is a JSON object
    in UTF-8 (no byte-order mark), and only strings of at most 64 characters.
    An error about a frame that is not JSON echoes nothing (§2)."""
    if len(frames) != 1:
        return None, None, None
    try:
        value = json.loads(frames[0].decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None, None, None
    if not isinstance(value, dict):
        return None, None, None

    def text(name: str) -> str | None:
        item = value.get(name)
        return item if isinstance(item, str) and len(item) <= 64 else None

    return text("type"), text("key"), text("room")


def _is_utf8(frame: bytes) -> bool:
    try:
        frame.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _reject_constant(name: str) -> Any:
    # json.loads takes NaN, Infinity and -Infinity; JSON has no such values.
    raise ValueError(f"{name} is not JSON")


def _decode(
    decoder: msgspec.json.Decoder[Any], frame: bytes, known: frozenset[str], what: str
) -> Any:
    try:
        message = decoder.decode(frame)
    except _DECODE_ERRORS:
        pass
    else:
        if frame.isascii() or _is_utf8(frame):
            return message
    # The fast path failed: work out, slowly and only now, what is wrong.
    raise _diagnose(decoder, frame, known, what)


def _diagnose(
    decoder: msgspec.json.Decoder[Any], frame: bytes, known: frozenset[str], what: str
) -> ProtocolError:
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError:
        return ProtocolError(ErrorCode.BAD_ENCODING, f"the {what} is not valid UTF-8")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return ProtocolError(ErrorCode.BAD_FRAME, f"the {what} is not a JSON document")
    if not isinstance(value, dict):
        return ProtocolError(ErrorCode.BAD_MESSAGE, f"the {what} is not a JSON object")
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in known:
        return ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown {what} type {kind!r}")
    if kind == "hello" and what == "request":
        # §7: the version is checked before anything else in a hello, so a
        # client of another version learns that, whatever else it sent.
        version = value.get("v")
        if type(version) is not int or version != PROTOCOL_VERSION:
            return ProtocolError(
                ErrorCode.BAD_VERSION,
                f"this broker speaks protocol version {PROTOCOL_VERSION}, not {version!r}",
            )
    try:
        decoder.decode(frame)  # again, only for msgspec's description of the fault
    except msgspec.ValidationError as exc:
        return ProtocolError(ErrorCode.BAD_MESSAGE, f"bad {kind!r} {what}: {exc}")
    except RecursionError:
        return ProtocolError(ErrorCode.BAD_FRAME, f"the {what} is nested too deeply")
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError) as exc:
        return ProtocolError(ErrorCode.BAD_ENCODING, f"bad {kind!r} {what}: {exc}")
    return ProtocolError(ErrorCode.BAD_MESSAGE, f"bad {kind!r} {what}")
