"""Batches (PROTOCOL.md §3): what one turn of the broker's loop produces for
one client, or for one room, travels in as few frames as fit."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
import zmq

from protocol import (
    BATCH_BYTES,
    Ack,
    ChatMessage,
    Say,
    decode_broadcast,
    decode_reply,
    encode,
    room_topic,
    unpack,
)
from tests.conftest import spawn_broker
from tests.test_integration import raw_join, recv

LINES = 40


@pytest.fixture
def zctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.term()


@pytest.mark.timeout(30)
def test_what_piles_up_while_the_broker_is_busy_arrives_in_batches(
    zctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    broker = spawn_broker("--max-rate", "0")
    dealer, sub = raw_join(zctx, broker, "batcher")  # type: ignore[arg-type]
    try:
        keys = [f"batch-{i}" for i in range(LINES)]
        # A stopped broker stands for a busy one: the requests wait in its
        # socket, and the next turn of its loop reads them all.
        broker.proc.send_signal(signal.SIGSTOP)
        try:
            for i, key in enumerate(keys):
                dealer.send(encode(Say(room="lobby", text=f"line {i}", key=key)))
        finally:
            broker.proc.send_signal(signal.SIGCONT)

        acks: list[Ack] = []
        ack_frames = 0
        while len(acks) < LINES:
            (frame,) = recv(dealer)
            ack_frames += 1
            assert len(frame) <= BATCH_BYTES
            for body in unpack(frame):
                reply = decode_reply([body])
                assert isinstance(reply, Ack), reply
                acks.append(reply)
        assert [ack.key for ack in acks] == keys
        assert [ack.seq for ack in acks] == list(range(1, LINES + 1))

        lines: list[ChatMessage] = []
        line_frames = 0
        while len(lines) < LINES:
            topic, frame = recv(sub)
            assert topic == room_topic("lobby") and len(frame) <= BATCH_BYTES
            batch = [decode_broadcast([topic, body]) for body in unpack(frame)]
            line_frames += any(isinstance(m, ChatMessage) for m in batch)
            lines += [m for m in batch if isinstance(m, ChatMessage)]
        assert [m.text for m in lines] == [f"line {i}" for i in range(LINES)]
        assert [m.seq for m in lines] == list(range(1, LINES + 1))
        # Forty lines and forty acks, in far fewer frames than one each.
        assert ack_frames < LINES and line_frames < LINES, (ack_frames, line_frames)
    finally:
        dealer.close(linger=0)
        sub.close(linger=0)
        assert broker.stop() == 0
