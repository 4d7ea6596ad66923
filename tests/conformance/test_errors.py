"""§7 error codes for bad input; the broker keeps serving after each (§6)."""

from __future__ import annotations

import json

import pytest

from tests.conformance.conftest import ClientFactory, JoinFactory
from tests.conformance.rawchat import RawClient, unique_room

BAD_FRAMES = [
    pytest.param([b"not json"], "bad_frame", id="not-json"),
    pytest.param([b""], "bad_frame", id="empty-frame"),
    pytest.param([b'{"type":"ping"}', b"{}"], "bad_frame", id="two-frames"),
    pytest.param([b'{"type":"say","text":"\xff\xfe"}'], "bad_encoding", id="invalid-utf8"),
    pytest.param([b"[1, 2, 3]"], "bad_message", id="json-array"),
    pytest.param([b'"ping"'], "bad_message", id="json-string"),
    pytest.param([b'{"type":"teleport"}'], "unknown_type", id="unknown-type"),
    pytest.param([b'{"nick":"x"}'], "unknown_type", id="no-type"),
    pytest.param([b'{"type":42}'], "unknown_type", id="type-not-string"),
    pytest.param([b'{"type":"say","room":"lobby"}'], "bad_message", id="missing-field"),
    pytest.param([b'{"type":"say","room":"lobby","text":7}'], "bad_message", id="wrong-type"),
    pytest.param([b'{"type":"join","room":"x","sync":"1"}'], "bad_message", id="string-int"),
    # §2: invalid UTF-8 anywhere, even in a field the broker ignores.
    pytest.param([b'{"type":"ping","extra":"\xff"}'], "bad_encoding", id="utf8-ignored-field"),
    pytest.param([b'{"type":"ping","\xc3":1}'], "bad_encoding", id="utf8-ignored-name"),
    # §2: NaN and Infinity are not JSON.
    pytest.param([b'{"type":"ping","x":NaN}'], "bad_frame", id="nan"),
    pytest.param([b'{"type":"ping","x":-Infinity}'], "bad_frame", id="infinity"),
    pytest.param([b'\xef\xbb\xbf{"type":"ping"}'], "bad_frame", id="byte-order-mark"),
]


def still_serving(client: RawClient) -> None:
    client.send({"type": "ping"})
    assert client.reply_of("pong")["type"] == "pong"


@pytest.mark.parametrize(("frames", "code"), BAD_FRAMES)
def test_malformed_requests_get_an_error_code(
    chat: JoinFactory, frames: list[bytes], code: str
) -> None:
    client = chat("fuzz")
    client.send_frames(frames)
    error = client.error()
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    still_serving(client)


def test_malformed_requests_before_hello_get_an_error_too(raw: ClientFactory) -> None:
    client = raw()
    client.send_frames([b"\x00\x01garbage"])
    assert client.error()["code"] in {"bad_frame", "bad_encoding"}
    client.join("after-garbage-" + unique_room("x")[-8:])


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b'{"type":"hello","v":2}', id="v2-alone"),
        pytest.param(b'{"type":"hello","v":2,"nick":5,"rooms":"x"}', id="v2-wrong-types"),
        pytest.param(b'{"type":"hello","v":"1","nick":"ann"}', id="v-string"),
    ],
)
def test_the_hello_version_is_checked_first(raw: ClientFactory, frame: bytes) -> None:
    client = raw()
    client.send_frames([frame])
    error = client.error()
    assert (error["code"], error["req"]) == ("bad_version", "hello")


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param('{"type":"ping","key":"k"}'.encode("utf-16"), id="utf-16"),
        pytest.param('{"type":"ping","key":"k"}'.encode("utf-16-le"), id="utf-16-no-bom"),
        pytest.param(b'\xef\xbb\xbf{"type":"ping","key":"k"}', id="utf-8-bom"),
    ],
)
def test_an_error_about_a_frame_that_is_not_json_has_no_req(
    raw: ClientFactory, frame: bytes
) -> None:
    client = raw()
    client.send_frames([frame])
    error = client.error()
    assert error["code"] in {"bad_frame", "bad_encoding"}
    assert "req" not in error and "key" not in error, error


def test_error_names_the_refused_request(chat: JoinFactory) -> None:
    client = chat("named")
    client.send({"type": "say", "room": "nowhere-at-all", "text": "hi", "key": "k-named-1"})
    error = client.error()
    assert error == {
        "type": "error",
        "code": "not_in_room",
        "message": error["message"],
        "req": "say",
        "key": "k-named-1",
        "room": "nowhere-at-all",
    }


def test_text_rules(chat: JoinFactory) -> None:
    room = unique_room("text")
    client = chat("texter", [room])
    limit = client.welcome["limits"]["text_bytes"]  # type: ignore[index]
    for text, code in [
        ("", "text_empty"),
        ("   \t ", "text_empty"),
        ("x" * (limit + 1), "text_too_long"),
        ("\u00e9" * (limit // 2 + 1), "text_too_long"),  # bytes of UTF-8, not characters
    ]:
        client.send({"type": "say", "room": room, "text": text})
        assert client.error()["code"] == code, text[:10]
    longest = "\u00e9" * (limit // 2)
    client.send({"type": "say", "room": room, "text": longest})
    _, line = client.broadcast(lambda m: m.get("type") == "message")
    assert line["text"] == longest


def test_lone_surrogate_is_bad_encoding(chat: JoinFactory) -> None:
    client = chat("surrogate")
    client.send_frames([b'{"type":"say","room":"lobby","text":"\\ud800"}'])
    assert client.error()["code"] == "bad_encoding"


def test_invalid_key_is_refused(chat: JoinFactory) -> None:
    client = chat("keys")
    for key in ["", "has space", "k" * 65, "slash/key"]:
        client.send({"type": "say", "room": "lobby", "text": "hi", "key": key})
        assert client.error()["code"] == "key_invalid", key


def test_unknown_fields_are_ignored(chat: JoinFactory) -> None:
    client = chat("future")
    client.send_frames([json.dumps({"type": "ping", "extension": {"x": 1}}).encode()])
    assert client.reply_of("pong")["type"] == "pong"


def test_flooding_is_refused_and_the_session_survives(chat: JoinFactory) -> None:
    room = unique_room("flood")
    client = chat("flooder", [room])
    limits = client.welcome["limits"]  # type: ignore[index]
    if limits["rate"] <= 0:
        pytest.skip("the broker announces no flood control (rate 0)")
    sent = int(limits["burst"]) + 5
    for i in range(sent):
        client.send({"type": "say", "room": room, "text": f"flood {i}", "key": f"{room}-{i}"})
    answers = [client.reply(lambda m: m.get("key", "").startswith(room)) for _ in range(sent)]
    refused = [a for a in answers if a["type"] == "error"]
    assert refused, "no line was refused"
    assert {a["code"] for a in refused} == {"rate_limited"}
    accepted = [a for a in answers if a["type"] == "ack"]
    assert len(accepted) >= int(limits["burst"])
    still_serving(client)  # ping is never limited
