"""Protocol v1 without sockets: the decoders' invariant (any input decodes or
raises ProtocolError), encode/decode round trips, and the validation rules."""

from __future__ import annotations

import json
import string
import types
import typing
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol
from protocol import (
    BATCH_BYTES,
    MAX_KEY_LENGTH,
    MAX_NICK_LENGTH,
    MAX_ROOM_LENGTH,
    MAX_TEXT_BYTES,
    NICK_PUNCTUATION,
    RESERVED_NICKS,
    ChatMessage,
    ErrorCode,
    Hello,
    ProtocolError,
    decode_broadcast,
    decode_reply,
    decode_request,
    encode,
    encode_broadcast,
    join_frames,
    nick_key,
    pack,
    pack_messages,
    room_topic,
    unpack,
    validate_key,
    validate_nick,
    validate_room,
    validate_text,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DECODERS = [decode_request, decode_reply, decode_broadcast]

REQUEST_TYPES = typing.get_args(protocol.Request)
REPLY_TYPES = typing.get_args(protocol.Reply)
BROADCAST_TYPES = typing.get_args(protocol.Broadcast)
ALL_TAGS = sorted(
    {
        str(msgspec.inspect.type_info(t).tag)  # type: ignore[attr-defined]
        for t in (*REQUEST_TYPES, *REPLY_TYPES, *BROADCAST_TYPES)
    }
)

# --- strategies -------------------------------------------------------------------

#: Any text that can travel as JSON: everything but lone surrogates.
text = st.text(st.characters(codec="utf-8"), max_size=40)
#: Any JSON value, nested a little.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


def strategy_for(annotation: Any) -> st.SearchStrategy[Any]:
    """A strategy for a field of a message struct, from its type annotation."""
    if annotation is str:
        return text
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers(-(2**63), 2**64 - 1)
    if annotation is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=3)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy_for(a) for a in args))
    if annotation is type(None):
        return st.none()
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return message_strategy(annotation)
    raise AssertionError(f"no strategy for {annotation!r}")


def message_strategy(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Any instance of a message struct, every field drawn by its type."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: strategy_for(hints[f.name]) for f in msgspec.structs.fields(cls)}
    return st.builds(cls, **fields)


@st.composite
def json_objects(draw: st.DrawFn) -> bytes:
    """A JSON object that looks like a message: a known (or unknown) type and
    fields of the right names with values of any type."""
    kind = draw(st.sampled_from([*ALL_TAGS, "nope", ""]) | json_values)
    cls = draw(st.sampled_from([*REQUEST_TYPES, *REPLY_TYPES, *BROADCAST_TYPES]))
    names = [f.name for f in msgspec.structs.fields(cls)]
    chosen = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    body: dict[str, Any] = {name: draw(json_values) for name in chosen}
    if draw(st.booleans()):
        body["type"] = kind
    return json.dumps(body).encode()


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """Valid-looking frames with bytes cut out, replaced or inserted (invalid
    UTF-8 and broken JSON included)."""
    frame = bytearray(draw(json_objects()))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(frame)))
        op = draw(st.sampled_from(["cut", "insert", "replace"]))
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\\u", b'"']))
        if op == "cut":
            del frame[at : at + draw(st.integers(1, 5))]
        elif op == "insert":
            frame[at:at] = junk
        else:
            frame[at : at + len(junk)] = junk
    return bytes(frame)


frames_lists = st.lists(st.binary(max_size=64) | json_objects() | mangled(), min_size=0, max_size=3)


def decodes_or_protocol_error(decoder: Any, frames: list[bytes]) -> None:
    try:
        decoder(frames)
    except ProtocolError as exc:
        assert exc.code in set(ErrorCode)
        assert exc.message


# --- the decoders' invariant --------------------------------------------------------


@FUZZ
@given(frames_lists)
def test_any_frames_decode_or_raise_protocol_error(frames: list[bytes]) -> None:
    for decoder in DECODERS:
        decodes_or_protocol_error(decoder, frames)


@FUZZ
@given(st.sampled_from(ALL_TAGS), st.data())
def test_a_broadcast_body_with_any_topic_decodes_or_raises(tag: str, data: st.DataObject) -> None:
    body = data.draw(json_objects())
    topic = data.draw(st.binary(max_size=20) | st.just(b"room/lobby/"))
    decodes_or_protocol_error(decode_broadcast, [topic, body])


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"null",
        b"[]",
        b"42",
        b'"hello"',
        b"{",
        b"\xff\xfe{}",
        b'{"type": "hello", "v": 1, "nick": "\xff"}',
        b'{"type": "hello", "v": 1, "nick": "\\ud800"}',
        b'{"type": 1}',
        b'{"type": null}',
        b'{"type": "warp"}',
        b'{"type": "hello", "v": "1", "nick": "a"}',
        b'{"type": "hello", "v": 1e400, "nick": "a"}',
        b'{"type": "hello", "v": 1, "nick": ["a"]}',
        b'{"type": "say", "room": "lobby"}',
        b'{"type": "say", "room": "lobby", "text": 5}',
        b'{"type": "history", "room": "a", "after": 1.5}',
        b'{"type": "join", "room": "a", "sync": 99999999999999999999999999999}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"type": "say", "room": "lobby", "text": "' + b"x" * 1_000_000 + b'"}',
    ],
)
def test_hostile_frames(frame: bytes) -> None:
    for decoder in DECODERS:
        decodes_or_protocol_error(decoder, [frame])
    decodes_or_protocol_error(decode_broadcast, [b"room/a/", frame])


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"not json", ErrorCode.BAD_FRAME),
        (b"\xff\xfe", ErrorCode.BAD_ENCODING),
        (b"[1, 2]", ErrorCode.BAD_MESSAGE),
        (b'{"nick": "a"}', ErrorCode.UNKNOWN_TYPE),
        (b'{"type": "warp"}', ErrorCode.UNKNOWN_TYPE),
        (b'{"type": "welcome"}', ErrorCode.UNKNOWN_TYPE),  # a reply is no request
        (b'{"type": "say", "room": "lobby", "text": 5}', ErrorCode.BAD_MESSAGE),
        (b'{"type": "say", "room": "lobby"}', ErrorCode.BAD_MESSAGE),
        (b'{"type": "hello", "v": "1", "nick": "a"}', ErrorCode.BAD_VERSION),
    ],
)
def test_request_error_codes(frame: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request([frame])
    assert caught.value.code == code


@pytest.mark.parametrize("count", [0, 2, 3])
def test_a_request_is_exactly_one_frame(count: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request([b'{"type": "ping"}'] * count)
    assert caught.value.code == ErrorCode.BAD_FRAME


def test_a_broadcast_topic_must_match_its_room() -> None:
    line = ChatMessage(room="lobby", nick="a", text="hi", ts=1.0, id="x", seq=1)
    topic, body = encode_broadcast(line)
    assert topic == b"room/lobby/"
    assert decode_broadcast([topic, body]) == line
    with pytest.raises(ProtocolError) as caught:
        decode_broadcast([room_topic("other"), body])
    assert caught.value.code == ErrorCode.BAD_FRAME


def test_unknown_fields_are_ignored() -> None:
    # Later minor versions may add fields (docs/PROTOCOL.md, versioning).
    request = decode_request([b'{"type": "hello", "v": 1, "nick": "a", "color": "red"}'])
    assert request == Hello(v=1, nick="a")


# --- round trips ----------------------------------------------------------------------


ROUND_TRIP = settings(max_examples=60, deadline=None)


@pytest.mark.parametrize("cls", REQUEST_TYPES)
@ROUND_TRIP
@given(data=st.data())
def test_every_request_round_trips(cls: type[Any], data: st.DataObject) -> None:
    message = data.draw(message_strategy(cls))
    assert decode_request([encode(message)]) == message


@pytest.mark.parametrize("cls", REPLY_TYPES)
@ROUND_TRIP
@given(data=st.data())
def test_every_reply_round_trips(cls: type[Any], data: st.DataObject) -> None:
    message = data.draw(message_strategy(cls))
    assert decode_reply([encode(message)]) == message


@pytest.mark.parametrize("cls", BROADCAST_TYPES)
@ROUND_TRIP
@given(data=st.data())
def test_every_broadcast_round_trips(cls: type[Any], data: st.DataObject) -> None:
    message = data.draw(message_strategy(cls))
    frames = encode_broadcast(message)
    assert frames[0] == room_topic(message.room)
    assert decode_broadcast(frames) == message


# --- batches -----------------------------------------------------------------------------

ANY_REPLY = st.one_of(*(message_strategy(cls) for cls in REPLY_TYPES))


@FUZZ
@given(replies=st.lists(ANY_REPLY, min_size=1, max_size=12), limit=st.integers(1, 3000))
def test_packed_replies_unpack_to_the_same_messages_in_order(
    replies: list[Any], limit: int
) -> None:
    bodies = [encode(reply) for reply in replies]
    frames = pack(bodies, limit)
    for frame in frames:
        # Within the limit, unless one message alone is longer.
        assert len(frame) <= limit or frame in bodies
    assert [body for frame in frames for body in unpack(frame)] == bodies
    decoded = [decode_reply([body]) for frame in frames for body in unpack(frame)]
    assert decoded == replies


@FUZZ
@given(replies=st.lists(ANY_REPLY, min_size=1, max_size=40), limit=st.integers(1, 3000))
def test_messages_packed_with_one_encoding_per_frame_are_valid_batches(
    replies: list[Any], limit: int
) -> None:
    # The broker's way (one encoder call per frame): the same messages in
    # order, each frame within the limit unless it is one message alone.
    bodies = [encode(reply) for reply in replies]
    frames = pack_messages(replies, limit)
    for frame in frames:
        assert len(frame) <= limit or frame in bodies
    assert [body for frame in frames for body in unpack(frame)] == bodies
    if len(frames) == 1:
        assert frames == pack(bodies, limit)  # byte for byte when all fit


@FUZZ
@given(replies=st.lists(ANY_REPLY, min_size=1, max_size=40), limit=st.integers(1, 3000))
def test_joined_frames_are_the_encoding_of_all_their_messages(
    replies: list[Any], limit: int
) -> None:
    # The broker stores a room's lines of a turn as the bytes it packed
    # them into for publishing: they must be exactly what encoding the
    # list of those messages gives, whether packed with pack_messages or pack.
    whole = msgspec.json.encode(replies)
    assert join_frames(pack_messages(replies, limit)) == whole
    assert join_frames(pack([encode(reply) for reply in replies], limit)) == whole


def test_messages_packed_past_the_limit_fill_frames_nearly_as_full() -> None:
    lines = [
        ChatMessage(room="r", nick="n", text="x" * (100 + i % 50), ts=1.0, id=f"b-{i}", seq=i)
        for i in range(200)
    ]
    frames = pack_messages(lines)
    assert [body for frame in frames for body in unpack(frame)] == [encode(m) for m in lines]
    assert all(len(frame) <= BATCH_BYTES for frame in frames)
    assert len(frames) <= len(pack([encode(m) for m in lines])) + 1


def test_a_lone_message_is_not_wrapped_and_a_batch_is_an_array() -> None:
    one = encode(Hello(v=1, nick="a"))
    assert pack([one]) == [one]
    frames = pack([one, one, one])
    assert frames == [b"[" + b",".join([one] * 3) + b"]"]
    assert json.loads(frames[0]) == [json.loads(one)] * 3
    # A limit that fits two: the third starts a frame of its own, alone.
    assert pack([one] * 3, limit=2 * len(one) + 3) == [b"[" + one + b"," + one + b"]", one]


@FUZZ
@given(frame=st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()))
def test_unpack_returns_bodies_or_raises_protocol_error(frame: bytes) -> None:
    try:
        bodies = unpack(frame)
    except ProtocolError as exc:
        assert exc.code == ErrorCode.BAD_FRAME
        return
    assert all(isinstance(body, bytes) for body in bodies)
    # Each body then decodes, or fails with a ProtocolError of its own.
    for body in bodies:
        decodes_or_protocol_error(decode_reply, [body])


def test_one_bad_message_in_a_batch_costs_only_itself() -> None:
    good = encode(protocol.Goodbye())
    bodies = unpack(b"[" + good + b',{"type":"from-the-future"},' + good + b"]")
    assert decode_reply([bodies[0]]) == decode_reply([bodies[2]]) == protocol.Goodbye()
    with pytest.raises(ProtocolError) as caught:
        decode_reply([bodies[1]])
    assert caught.value.code == ErrorCode.UNKNOWN_TYPE


# --- validation --------------------------------------------------------------------------

NICK_FIRST = string.ascii_letters + string.digits + "_"
NICK_CHARS = string.ascii_letters + string.digits + NICK_PUNCTUATION
ROOM_FIRST = string.ascii_lowercase + string.digits
ROOM_CHARS = ROOM_FIRST + "_-."
KEY_CHARS = string.ascii_letters + string.digits + "_-.:"

#: Mostly near-valid names, some arbitrary text (control characters, spaces,
#: non-ASCII look-alikes such as the Kelvin sign).
names = (
    st.text(st.sampled_from(NICK_CHARS + "#"), max_size=40)
    | st.text(max_size=40)
    | st.sampled_from(sorted(RESERVED_NICKS)).map(str.upper)
    | st.text(st.sampled_from(NICK_CHARS + " \t\n\x00\u212a\u0130é"), max_size=10)
)


def invalid(call: Any, value: str) -> ErrorCode | None:
    try:
        call(value)
    except ProtocolError as exc:
        return exc.code
    return None


@settings(max_examples=500, deadline=None)
@given(names)
def test_nick_rules(nick: str) -> None:
    expected_ok = (
        1 <= len(nick) <= MAX_NICK_LENGTH
        and nick[0] in NICK_FIRST
        and all(c in NICK_CHARS for c in nick)
        and nick.lower() not in RESERVED_NICKS
    )
    if expected_ok:
        assert validate_nick(nick) == nick  # case kept for display
    else:
        assert invalid(validate_nick, nick) == ErrorCode.NICK_INVALID


@pytest.mark.parametrize(
    "nick", ["", "a b", "a\tb", "x" * 33, "-lead", "éa", "a\n", "Server", "ADMIN", "root"]
)
def test_invalid_nicks(nick: str) -> None:
    assert invalid(validate_nick, nick) == ErrorCode.NICK_INVALID


@pytest.mark.parametrize("nick", ["a", "A", "_x", "x" * 32, "x[1]", "a.b-c{d}^e|f", "9lives"])
def test_valid_nicks(nick: str) -> None:
    assert validate_nick(nick) == nick


@given(st.text(st.sampled_from(NICK_CHARS), min_size=1, max_size=32))
def test_nick_key_is_case_insensitive(nick: str) -> None:
    assert nick_key(nick.upper()) == nick_key(nick.lower()) == nick_key(nick.swapcase())


@settings(max_examples=500, deadline=None)
@given(names)
def test_room_rules(room: str) -> None:
    bare = room[1:] if room.startswith("#") else room
    expected_ok = (
        1 <= len(bare) <= MAX_ROOM_LENGTH
        and bare.isascii()
        and bare[0].lower() in ROOM_FIRST
        and all(c in ROOM_CHARS for c in bare.lower())
    )
    if expected_ok:
        canonical = validate_room(room)
        assert canonical == bare.lower()
        assert validate_room(canonical) == canonical  # canonical forms are stable
        assert validate_room("#" + canonical) == canonical
        assert validate_room(canonical.upper()) == canonical
    else:
        assert invalid(validate_room, room) == ErrorCode.ROOM_INVALID


@pytest.mark.parametrize("room", ["", "#", "a b", "_x", "x" * 33, "é", "\u212aitchen", "a/b"])
def test_invalid_rooms(room: str) -> None:
    assert invalid(validate_room, room) == ErrorCode.ROOM_INVALID


def test_room_canonical_form() -> None:
    assert validate_room("#Lobby") == "lobby"
    assert validate_room("DEV.ops-2") == "dev.ops-2"


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=50)
    | st.text(" \t\n\u3000", max_size=5)
    | st.integers(4090, 4100).map(lambda n: "x" * n)
    | st.integers(1360, 1370).map(lambda n: "€" * n)  # 3 bytes each
)
def test_text_rules(line: str) -> None:
    try:
        size: int | None = len(line.encode("utf-8"))
    except UnicodeEncodeError:
        size = None
    if not line or line.isspace():
        expected: ErrorCode | None = ErrorCode.TEXT_EMPTY
    elif size is None:
        expected = ErrorCode.BAD_ENCODING
    elif size > MAX_TEXT_BYTES:
        expected = ErrorCode.TEXT_TOO_LONG
    else:
        expected = None
    if expected is None:
        assert validate_text(line) == line
    else:
        assert invalid(validate_text, line) == expected


def test_text_limit_is_bytes_not_characters() -> None:
    assert validate_text("x" * MAX_TEXT_BYTES)
    assert invalid(validate_text, "x" * (MAX_TEXT_BYTES + 1)) == ErrorCode.TEXT_TOO_LONG
    assert invalid(validate_text, "é" * (MAX_TEXT_BYTES // 2 + 1)) == ErrorCode.TEXT_TOO_LONG
    assert invalid(validate_text, "a\ud800") == ErrorCode.BAD_ENCODING


@given(st.text(st.sampled_from(KEY_CHARS + " /é\x00"), max_size=70))
def test_key_rules(key: str) -> None:
    if 1 <= len(key) <= MAX_KEY_LENGTH and all(c in KEY_CHARS for c in key):
        assert validate_key(key) == key
    else:
        assert invalid(validate_key, key) == ErrorCode.KEY_INVALID


# --- the right code for each fault (issue 13: §2, §7) ---------------------------------

_REQUEST_TAGS = sorted(
    str(msgspec.inspect.type_info(t).tag)  # type: ignore[attr-defined]
    for t in REQUEST_TYPES
)


def _reject(name: str) -> Any:
    raise ValueError(name)


def expected_request_code(frame: bytes) -> ErrorCode | None:
    """What §2 and §7 say a request frame is refused with, decided with the
    standard library alone; None where only the message's fields decide."""
    try:
        document = frame.decode("utf-8")
    except UnicodeDecodeError:
        return ErrorCode.BAD_ENCODING
    try:
        value = json.loads(document, parse_constant=_reject)
    except (ValueError, RecursionError):
        return ErrorCode.BAD_FRAME
    if not isinstance(value, dict):
        return ErrorCode.BAD_MESSAGE
    if value.get("type") not in _REQUEST_TAGS:
        return ErrorCode.UNKNOWN_TYPE
    version = value.get("v")
    if value["type"] == "hello" and (type(version) is not int or version != 1):
        return ErrorCode.BAD_VERSION
    return None


@st.composite
def request_frames(draw: st.DrawFn) -> bytes:
    """Request-like frames: real types with stray fields and values, some with
    bytes spliced in (invalid UTF-8, NaN, a byte-order mark) anywhere."""
    body: dict[str, Any] = {"type": draw(st.sampled_from([*_REQUEST_TAGS, "nope"]))}
    names = st.sampled_from(["v", "nick", "room", "text", "x", "key"])
    body.update(draw(st.dictionaries(names, json_values, max_size=4)))
    if body["type"] == "hello" and draw(st.booleans()):
        body["v"] = draw(st.sampled_from([1, 2, 0, "1", True, 1.0, None]))
    frame = json.dumps(body).encode()
    splice = draw(
        st.sampled_from(
            [b"", b"\xff", b"\xc3", b"\xed\xa0\x80", b"NaN", b"Infinity", b"\xef\xbb\xbf"]
        )
    )
    if splice:
        at = draw(st.integers(0, len(frame)))
        frame = frame[:at] + splice + frame[at:]
    return frame


@FUZZ
@given(request_frames() | st.binary(max_size=64))
def test_any_request_frame_decodes_or_raises_the_code_the_document_gives(frame: bytes) -> None:
    expected = expected_request_code(frame)
    try:
        decode_request([frame])
    except ProtocolError as exc:
        if expected is not None:
            assert exc.code == expected, (frame, exc)
        else:  # fields of the wrong type, or a lone surrogate escape in one
            assert exc.code in {ErrorCode.BAD_MESSAGE, ErrorCode.BAD_ENCODING}, (frame, exc)
        return
    assert expected is None, (frame, expected)


@FUZZ
@given(request_frames())
def test_replies_and_broadcasts_refuse_bytes_that_are_not_utf8(frame: bytes) -> None:
    for decoder, frames in ((decode_reply, [frame]), (decode_broadcast, [b"room/x/", frame])):
        try:
            decoder(frames)
        except ProtocolError as exc:
            if expected_request_code(frame) == ErrorCode.BAD_ENCODING:
                assert exc.code == ErrorCode.BAD_ENCODING
            continue
        frame.decode("utf-8")  # whatever decodes is valid UTF-8


@pytest.mark.parametrize(
    ("frame", "echo"),
    [
        (b'{"type":"say","key":"k","room":"r"}', ("say", "k", "r")),
        ('{"type":"say","key":"k"}'.encode("utf-16"), (None, None, None)),
        ('{"type":"say","key":"k"}'.encode("utf-16-le"), (None, None, None)),
        (b'\xef\xbb\xbf{"type":"say","key":"k"}', (None, None, None)),
        (b'{"type":"say","key":"k","x":NaN}', (None, None, None)),
        (b'{"type":"say","key":"k","x":"\xff"}', (None, None, None)),
        (b'{"type":"say","key":"' + b"k" * 65 + b'"}', ("say", None, None)),
    ],
)
def test_describe_request_echoes_only_from_json_objects(
    frame: bytes, echo: tuple[str | None, ...]
) -> None:
    from protocol.codec import describe_request

    assert describe_request([frame]) == echo
