"""Frames written from docs/PROTOCOL.md alone, sent with a raw DEALER to a real
``chat-broker`` (issue 13, items 7 to 10): the version first in a hello, UTF-8
anywhere in a frame, JSON without NaN, and no ``req`` echoed from a frame that
is not JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import zmq

from tests.conformance.rawchat import RawClient, unique_nick
from tests.conftest import BrokerProcess, has_ipv6_loopback, spawn_broker

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def running() -> Iterator[BrokerProcess]:
    handle = spawn_broker("--client-timeout", "5", "--max-rate", "0")
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def raw(running: BrokerProcess) -> Iterator[RawClient]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    client = RawClient(ctx, running.router, None)
    try:
        yield client
    finally:
        client.close()
        ctx.term()


def _answer(raw: RawClient, frame: bytes) -> dict[str, object]:
    raw.send_frames([frame])
    return raw.reply()


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"hello","v":2}',
        b'{"type":"hello","v":2,"nick":5,"rooms":"lobby"}',
        b'{"type":"hello","v":2,"nick":"ann","resume":7}',
        b'{"type":"hello","v":"1","nick":"ann"}',
        b'{"type":"hello","v":true,"nick":"ann"}',
        b'{"type":"hello","v":1.0,"nick":"ann"}',
        b'{"type":"hello","nick":"ann"}',
    ],
)
def test_the_version_of_a_hello_is_checked_before_anything_else(
    raw: RawClient, frame: bytes
) -> None:
    answer = _answer(raw, frame)
    assert (answer["type"], answer["code"], answer.get("req")) == ("error", "bad_version", "hello")
    assert "version 1" in str(answer["message"])


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"ping","x":"\xff"}',
        b'{"type":"ping","\xc3":1}',
        b'{"type":"hello","v":1,"nick":"ann","x":"\xed\xa0\x80"}',  # an encoded surrogate
        b'{"type":"hello","v":1,"nick":"ann","x":["\xf8\x88\x80\x80\x80"]}',
    ],
)
def test_invalid_utf8_in_a_field_the_broker_ignores_is_bad_encoding(
    raw: RawClient, frame: bytes
) -> None:
    answer = _answer(raw, frame)
    assert (answer["type"], answer["code"]) == ("error", "bad_encoding")
    assert "req" not in answer  # not a JSON document: nothing to echo


def test_invalid_utf8_in_an_ignored_field_of_a_line_is_not_published(raw: RawClient) -> None:
    room = "utf8"
    raw.join(unique_nick("ann"), [room])
    raw.send_frames([b'{"type":"say","room":"utf8","text":"hi","key":"k-utf8","x":"\xff"}'])
    assert raw.error("bad_encoding")
    raw.send({"type": "say", "room": room, "text": "fine", "key": "k-utf8-2"})
    assert raw.reply_of("ack")["key"] == "k-utf8-2"
    _, line = raw.broadcast(lambda m: m.get("type") == "message")
    assert line["text"] == "fine"  # the bad one was never published


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json(raw: RawClient, constant: bytes) -> None:
    answer = _answer(raw, b'{"type":"ping","x":' + constant + b"}")
    assert (answer["type"], answer["code"]) == ("error", "bad_frame")
    assert "req" not in answer


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"ping","key":"k","room":"lobby"}'.encode("utf-16"),
        '{"type":"ping","key":"k","room":"lobby"}'.encode("utf-16-le"),
        '{"type":"ping","key":"k","room":"lobby"}'.encode("utf-32"),
        b'\xef\xbb\xbf{"type":"ping","key":"k","room":"lobby"}',  # a UTF-8 byte-order mark
    ],
)
def test_an_error_about_a_frame_that_is_not_json_echoes_nothing(
    raw: RawClient, frame: bytes
) -> None:
    answer = _answer(raw, frame)
    assert answer["type"] == "error"
    assert answer["code"] in ("bad_frame", "bad_encoding")
    assert not {"req", "key", "room"} & answer.keys(), answer


def test_a_json_request_still_has_its_fields_echoed(raw: RawClient) -> None:
    answer = _answer(raw, json.dumps({"type": "say", "room": "lobby", "key": "k1"}).encode())
    assert (answer["code"], answer["req"], answer["key"], answer["room"]) == (
        "bad_message",
        "say",
        "k1",
        "lobby",
    )


def test_the_broker_answers_after_all_of_it(raw: RawClient) -> None:
    raw.join(unique_nick("bob"))
    raw.send({"type": "ping"})
    assert raw.reply_of("pong")["type"] == "pong"


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this host has no IPv6 loopback (::1)")
def test_an_ipv6_broker_advertises_its_pub_in_brackets_and_works() -> None:
    # PROTOCOL.md §1: an IPv6 pub is written tcp://[addr]:port; a client sets
    # ZMQ_IPV6 on its sockets to reach it.
    running = spawn_broker(router="tcp://[::1]:*", pub="tcp://[::1]:*")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ctx.setsockopt(zmq.IPV6, 1)
    client = RawClient(ctx, running.router, None)
    try:
        welcome = client.join(unique_nick("six"))
        assert str(welcome["pub"]).startswith("tcp://[::1]:")
        client.send({"type": "say", "room": "lobby", "text": "over six", "key": "k-six"})
        assert client.reply_of("ack")["key"] == "k-six"
        assert client.broadcast(lambda m: m.get("type") == "message")[1]["text"] == "over six"
    finally:
        client.close()
        ctx.term()
        running.stop()
