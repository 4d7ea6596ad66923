"""§4 msg: private lines go through the ROUTER only, never the PUB socket."""

from __future__ import annotations

import zmq

from tests.conformance.conftest import JoinFactory, Target
from tests.conformance.rawchat import QUIET, WAIT, reachable


def test_private_lines_never_travel_over_pub(
    chat: JoinFactory, target: Target, zmq_context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    sender, recipient = chat("sender"), chat("recipient")
    spy = zmq_context.socket(zmq.SUB)
    spy.linger = 0
    try:
        welcome = sender.welcome
        assert welcome is not None
        spy.connect(target.pub or reachable(welcome["pub"], target.router))
        spy.subscribe(b"")  # everything
        # Prove the spy is live before the private line: it must see a room
        # line. Its subscription takes a moment to reach the broker (§5.1), so
        # say it again until one arrives.
        seen: list[list[bytes]] = []
        for _ in range(8):
            sender.send({"type": "say", "room": "lobby", "text": "spy check"})
            if spy.poll(int(WAIT * 1000 / 8)):
                seen.append(spy.recv_multipart())
                break
        assert seen, "the spy SUB subscribed to everything sees nothing at all"
        secret = "the secret is 42"
        sender.send({"type": "msg", "to": recipient.welcome["nick"].upper(), "text": secret})  # type: ignore[index]
        line = recipient.reply(lambda m: m.get("type") == "private")
        assert line["text"] == secret
        assert line["nick"] == welcome["nick"]
        assert line["to"] == recipient.welcome["nick"]  # type: ignore[index]
        assert isinstance(line["id"], str) and isinstance(line["ts"], float | int)
        copy = sender.reply(lambda m: m.get("type") == "private")
        assert copy == line
        # After the private line, a marker: once the spy has it, anything
        # published before it would have arrived too.
        sender.send({"type": "say", "room": "lobby", "text": "marker"})
        while not any(b"marker" in frame for frames in seen for frame in frames):
            assert spy.poll(5000), "the spy never saw the marker"
            seen.append(spy.recv_multipart())
        assert not any(secret.encode() in frame for frames in seen for frame in frames)
        for client in (sender, recipient):
            client.watch(QUIET)
            assert not [m for _, m in client.broadcasts if m.get("text") == secret]
    finally:
        spy.close(0)


def test_private_line_to_nobody_is_refused(chat: JoinFactory) -> None:
    sender = chat("lonely")
    sender.send({"type": "msg", "to": "nobody-here-xyz", "text": "hello?"})
    error = sender.error()
    assert (error["code"], error["req"]) == ("no_such_nick", "msg")
